"""Mutation check for the security and privacy checks: remove each check in turn (a one-line edit of the
source), run the test that names it, and report whether that test fails - as it must. Not collected
by pytest; run `.venv/bin/python tests/mutation_check.py [NAME ...]` (about 3 minutes for all).
The source file is restored after each run."""

import subprocess
import sys
from pathlib import Path

R = Path(__file__).resolve().parent.parent
MUTATIONS = [  # (name, file, the check as it is, the check removed, the test that names it)
    (
        'neighbour advert signatures',
        'primia/secure/protocol.py',
        '        payloads |= verified_adverts(self.params, {p: adverts[p] for p in g.nbrs[self.me]}, self.verify)',
        '        pass',
        'tests/unit/test_secagg_protocol.py::test_a_forged_advert_in_u1_is_caught_by_its_owner_and_its_neighbours',
    ),
    (
        'mask binding',
        'primia/secure/protocol.py',
        '        check_masks(self.params, g, self.u2, {h: masks[h] for h in u3 & (g.nbrs[self.me] | {self.me})}, '
        'self.verify)\n',
        '',
        'tests/adversarial/test_split_view.py::test_the_mask_binding_alone_stops_it',
    ),
    (
        'strict-majority confirm',
        'primia/secure/plan.py',
        '        return min(parties, (parties + self.colluders) // 2 + 1)',
        '        return 1',
        'tests/adversarial/test_split_view.py::test_the_quorum_intersection_alone_stops_it',
    ),
    (
        'U2 floor',
        'primia/secure/protocol.py',
        '        self.floors.check_u2(self.params, self.me, self.u2)\n',
        '',
        'tests/adversarial/test_split_view.py::test_the_quorum_intersection_alone_stops_it',
    ),
    (
        'roster members floor',
        'primia/secure/plan.py',
        '        if strangers:\n',
        '        if False:\n',
        'tests/adversarial/test_plan_floors.py::test_a_sybil_in_the_plan_is_refused',
    ),
    (
        'min parties floor',
        'primia/secure/plan.py',
        '        if n < self.min_parties:',
        '        if False:',
        'tests/adversarial/test_plan_floors.py::test_a_two_party_plan_is_refused',
    ),
    (
        'max parties floor',
        'primia/secure/plan.py',
        '        if n > self.max_parties:',
        '        if False:',
        'tests/adversarial/test_plan_floors.py::test_more_parties_than_the_ring_holds_and_a_weak_threshold_are_refused',
    ),
    (
        'degree floor',
        'primia/secure/plan.py',
        '        if params.degree and params.degree < graph.auto_degree(n):',
        '        if False:',
        'tests/adversarial/test_split_view.py::test_a_coordinator_chosen_degree_below_the_automatic_one_is_refused',
    ),
    (
        'colluder sum floor',
        'primia/secure/plan.py',
        '        return self.colluders + 2',
        '        return 2',
        'tests/adversarial/test_plan_floors.py::test_a_hospital_that_assumes_a_colluder_refuses_a_sum_of_two',
    ),
    (
        'ledger',
        'primia/secure/protocol.py',
        '        if held[0] != members:\n            raise second_sum',
        '        if False:\n            raise second_sum',
        'tests/adversarial/test_round_attacks.py::test_a_retried_round_with_another_sample_gets_no_second_sum',
    ),
    (
        'one update sum whatever the purpose',
        'primia/secure/protocol.py',
        '        keys = [f"{p.federation}/update/{self.weights_digest}"]',
        '        keys = [f"{p.federation}/update/{self.weights_digest}/{p.purpose}"]',
        'tests/adversarial/test_round_attacks.py::test_a_second_sum_of_updates_under_another_purpose_is_refused',
    ),
    (
        'update ledger on the weights',
        'primia/secure/protocol.py',
        '        keys = [f"{p.federation}/update/{self.weights_digest}"]',
        '        keys = [f"{p.federation}/update/{p.model}"]',
        'tests/adversarial/test_round_attacks.py::test_the_same_weights_committed_again_get_no_second_sum',
    ),
    (
        'validation ledger on the weights',
        'primia/secure/protocol.py',
        '        return keys + ([f"{p.federation}/validation/{self.weights_digest}"]',
        '        return keys + ([f"{p.federation}/validation/{p.model}"]',
        'tests/adversarial/test_round_attacks.py::test_the_same_weights_committed_again_get_no_second_sum',
    ),
    (
        'one statistics pass',
        'primia/secure/protocol.py',
        '            return [f"{p.federation}/statistics"]',
        '            return [f"{p.federation}/statistics/{p.round}"]',
        'tests/adversarial/test_round_attacks.py::test_a_second_statistics_pass_is_refused',
    ),
    (
        'file ledger',
        'primia/secure/ledger.py',
        '            if held is not None and held["members"] != members:',
        '            if False:',
        'tests/unit/test_roster.py::test_the_unmask_ledger_holds_across_agent_restarts_and_fails_closed_when_damaged',
    ),
    (
        'share commitments',
        'primia/secure/unmask.py',
        '        if share.x != params.index(revealer) or not matches:',
        '        if share.x != params.index(revealer):',
        'tests/unit/test_secagg_protocol.py::test_a_share_that_does_not_match_its_commitment_is_not_used',
    ),
    (
        'plan model binding',
        'primia/federation/secure_round.py',
        '    if got != expected:',
        '    if False:',
        'tests/adversarial/test_plan_floors.py::'
        'test_a_plan_for_another_federation_round_model_or_purpose_than_the_dispatch_is_refused',
    ),
    (
        'admit nonce',
        'primia/federation/rounds.py',
        '            elif m["payload"].get("nonce") != dispatches[h].nonce:',
        '            elif False:',
        'tests/adversarial/test_round_attacks.py::test_a_replayed_mask_message_keeps_its_hospital_out_of_the_sum',
    ),
    (
        'admit roster status',
        'primia/federation/rounds.py',
        '            if entry is None or entry.status != "active":\n'
        '                refused[h] = f"{h} is not an active',
        '            if False:\n                refused[h] = f"{h} is not an active',
        'tests/adversarial/test_round_attacks.py::test_a_hospital_revoked_during_the_round_is_not_in_the_sum',
    ),
    (
        'void on rejected in sum',
        'primia/federation/rounds.py',
        '    if void:\n        return out, (',
        '    if False:\n        return out, (',
        'tests/adversarial/test_round_attacks.py::test_a_rejected_hospital_inside_the_sum_voids_the_attempt',
    ),
    (
        'committed model check',
        'primia/store/checkpoints.py',
        '        if entry is None or (entry["bucket"], entry["key"], entry["sha256"]) != '
        '(ref.bucket, ref.key, ref.sha256):',
        '        if False:',
        'tests/adversarial/test_round_attacks.py::test_a_validation_pass_on_weights_the_coordinator_did_not_commit_is_refused',
    ),
    (
        'roster signature',
        'primia/federation/roster.py',
        '    if not ed25519_valid(authority_key, canonical_json(body), signature):',
        '    if False:',
        'tests/unit/test_roster.py::test_a_hospital_accepts_only_the_authoritys_signature_and_never_an_older_version',
    ),
    (
        'roster version',
        'primia/federation/roster.py',
        '            if roster.version < seen:',
        '            if False:',
        'tests/unit/test_roster.py::test_a_hospital_accepts_only_the_authoritys_signature_and_never_an_older_version',
    ),
    (
        'coordinator roster signature',
        'primia/secure/transport.py',
        '        if not valid or got != (stage, self.params.federation, self.round, self.params.session):',
        '        if False:',
        'tests/unit/test_secagg_protocol.py::test_hospitals_refuse_rosters_the_coordinator_did_not_sign_and_ignore_a_forged_abort',
    ),
    (
        'no repair of a backwards head',
        'primia/store/checkpoints.py',
        '        history.check_not_backwards(self.federation_id, head, remembered)  # before any repair writes a head',
        '        pass',
        'tests/adversarial/test_history.py::test_a_failed_resume_does_not_lower_what_the_coordinator_remembers',
    ),
    (
        'colluder threshold',
        'primia/secure/protocol.py',
        '        if g.threshold <= self.floors.colluders:',
        '        if False:',
        'tests/unit/test_secagg_protocol.py::test_a_hospital_refuses_a_threshold_its_assumed_colluders_could_meet',
    ),
    (
        'one plan for all',
        'primia/secure/protocol.py',
        '        if other_plans:',
        '        if False:',
        'tests/unit/test_secagg_protocol.py::test_an_advert_made_under_another_plan_is_refused',
    ),
    (
        'nested message shapes',
        'primia/secure/protocol.py',
        '    if not _nested_ok(stage, payload):',
        '    if False:',
        'tests/unit/test_secagg_protocol.py::test_malformed_insides_of_signed_messages_are_rejected_with_a_reason',
    ),
    (
        'weight bound ceiling',
        'primia/secure/transport.py',
        'if self.max_weight and m["payload"]["weight_bound"] > self.max_weight}',
        'if False}',
        'tests/adversarial/test_round_attacks.py::'
        'test_a_hospital_signing_an_oversized_weight_bound_is_kept_out_of_the_sum',
    ),
    (
        'confirmation filter',
        'primia/secure/transport.py',
        '                 if {k: m["payload"][k] for k in view} != view}',
        '                 if False}',
        'tests/adversarial/test_round_attacks.py::test_a_confirmation_over_other_rosters_is_not_relayed',
    ),
    (
        'roster expiry',
        'primia/federation/roster.py',
        '    if expired:',
        '    if False:',
        'tests/unit/test_roster.py::test_an_expired_roster_or_one_of_another_federation_is_refused',
    ),
    (
        'roster name binding',
        'primia/federation/roster.py',
        '            if current.get("name", roster.name) != roster.name:',
        '            if False:',
        'tests/unit/test_roster.py::test_an_expired_roster_or_one_of_another_federation_is_refused',
    ),
    (
        'no data paths in failures',
        'flows/local_training.py',
        '    except SAFE_TO_SAY:\n        raise\n    except Exception as exc:',
        '    except Exception as exc:\n        raise\n    except BaseException as exc:',
        'tests/unit/test_hospital_errors.py::test_a_data_error_leaves_only_its_kind',
    ),
    (
        'head counter',
        'primia/store/history.py',
        '    if head is not None and head.counter < remembered:',
        '    if False:',
        'tests/adversarial/test_history.py::test_an_older_head_restored_is_refused',
    ),
    (
        'head round present',
        'primia/store/history.py',
        '    if head.round not in manifests:',
        '    if False:',
        'tests/adversarial/test_history.py::test_deleting_the_newest_manifests_is_refused_naming_the_round',
    ),
    (
        'chain',
        'primia/store/history.py',
        '        if manifests[r][1].get("previous") != digest(manifests[r - 1][0]):',
        '        if False:',
        'tests/adversarial/test_history.py::test_a_missing_head_or_a_broken_chain_is_refused',
    ),
    (
        'head missing',
        'primia/store/history.py',
        '        if remembered or manifests:',
        '        if False:',
        'tests/adversarial/test_history.py::test_a_missing_head_or_a_broken_chain_is_refused',
    ),
    (
        'head signature',
        'primia/store/history.py',
        '        public.verify(signature, canonical_json(body))\n',
        '',
        'tests/adversarial/test_history.py::test_a_head_or_manifest_forged_with_a_hospitals_key_is_refused',
    ),
    (
        'sum bounds',
        'primia/federation/secure_update.py',
        '        if client_scale is None and np.abs(delta).max(initial=0.0) > cfg.clip + 1e-9:  '
        '# means of clipped values',
        '        if False:',
        'tests/unit/test_secagg_protocol.py::test_a_sum_outside_the_signed_bounds_fails_closed',
    ),
    (
        'agent plaintext floor',
        'primia/federation/agent.py',
        '    if secagg is None and agent.require_secure_aggregation:',
        '    if False:',
        'tests/unit/test_agent_plan.py',
    ),
    (
        'privacy account rollback',
        'primia/privacy/keeper.py',
        '        if rounds < seen:',
        '        if False:',
        'tests/unit/test_privacy_keeper.py::test_a_deleted_or_rolled_back_account_is_refused',
    ),
    (
        'privacy account missing',
        'primia/privacy/keeper.py',
        '            if seen:',
        '            if False:',
        'tests/unit/test_privacy_keeper.py::test_a_deleted_or_rolled_back_account_is_refused',
    ),
    (
        'privacy account binding',
        'primia/privacy/accounting.py',
        '        if got != (STATE_VERSION, federation, hospital, kind, kind):',
        '        if False:',
        'tests/unit/test_privacy_accounting.py::test_state_round_trips_and_is_bound_to_its_federation_hospital_and_kind',
    ),
    (
        'hospital declines past its budget',
        'primia/federation/private_round.py',
        '    if after > budget.target:',
        '    if False:',
        'tests/integration/test_dp_federation.py',
    ),
    (
        'coordinator stops before the budget',
        'primia/privacy/budget.py',
        '    if asked - len(over) >= quorum:',
        '    if True:',
        'tests/integration/test_dp_federation.py::test_a_budget_for_two_rounds_stops_after_two_with_the_reason',
    ),
    (
        'DP-SGD noise from fresh randomness',
        'primia/privacy/dpsgd.py',
        '                               noise_generator=torch.Generator().manual_seed(secrets.randbits(63)))',
        '                               noise_generator=None)',
        'tests/unit/test_dp_training.py::test_the_noise_is_fresh_whatever_the_seed',
    ),
    (
        'delta below 1/N',
        'primia/privacy/accounting.py',
        '    if population is not None and delta >= 1 / max(population, 1):',
        '    if False:',
        'tests/unit/test_privacy_accounting.py::test_budgets_that_mean_nothing_are_refused',
    ),
    (
        'rounding within its norm bound',
        'primia/privacy/skellam.py',
        '            if float(np.dot(out, out)) <= bound_sq:',
        '            if True:',
        'tests/unit/test_skellam.py::test_every_clipped_update_is_within_the_bound_and_every_rounding_within_its_own',
    ),
    (
        'client DP refuses an update in the clear',
        'primia/federation/private_round.py',
        '    if secure is None:\n        raise PrivacyError(f"hospital {hospital.name}: privacy.mode client adds',
        '    if False:\n        raise PrivacyError(f"hospital {hospital.name}: privacy.mode client adds',
        'tests/unit/test_client_dp.py',
    ),
    (
        'client DP noise shares',
        'primia/privacy/client_dp.py',
        '    return plan.quantizer.quantize(clipped, rng) + plan.noise_share(rng), was_clipped',
        '    return plan.quantizer.quantize(clipped, rng), was_clipped',
        'tests/unit/test_client_dp.py',
    ),
    (
        'agent DP floor',
        'primia/federation/agent.py',
        '    if train and agent.require_dp and privacy_mode == "off":',
        '    if False:',
        'tests/adversarial/test_privacy_attacks.py',
    ),
    (
        'privacy gate: epsilon budget',
        'primia/registry/gates.py',
        '    if float(eps) > p.max_epsilon:',
        '    if False:',
        'tests/unit/test_registry_core.py::test_privacy_gate_fails_closed',
    ),
    (
        'privacy gate: DP required',
        'primia/registry/gates.py',
        '        if p.require_dp:',
        '        if False:',
        'tests/unit/test_registry_core.py::test_privacy_gate_fails_closed',
    ),
    (
        'audit gate: missing audit',
        'primia/registry/gates.py',
        '    if verdict is None:',
        '    if False:',
        'tests/unit/test_registry_core.py::test_audit_gate_needs_a_passing_audit',
    ),
    (
        'quality gate: floor',
        'primia/registry/gates.py',
        '    if score < q.floor:',
        '    if False:',
        'tests/unit/test_registry_core.py::test_quality_gate_floor_and_champion_tolerance',
    ),
    (
        'registry: signed checkpoint',
        'primia/registry/promotion.py',
        '    if (obj.get("bucket"), obj.get("key"), obj.get("sha256")) != named:',
        '    if False:',
        'tests/integration/test_model_registry.py::test_privacy_gate_refuses_a_version_whose_checkpoint_is_not_the_signed_one',
    ),
    (
        'registry: weights digest',
        'primia/registry/promotion.py',
        '    if digest(store.get_weights(ref)) != digest(state_to_numpy(model.model.state_dict())):',
        '    if False:',
        'tests/integration/test_model_registry.py::test_privacy_gate_refuses_registry_weights_that_are_not_the_checkpoints',
    ),
    (
        'registry: champion only if all pass',
        'primia/registry/promotion.py',
        '    if decision.passed:',
        '    if True:',
        'tests/integration/test_model_registry.py::test_promotion_gates',
    ),
    (
        'registry: nightly demotion',
        'primia/registry/promotion.py',
        '    if not decision.passed:',
        '    if False:',
        'tests/integration/test_model_registry.py::test_promotion_gates',
    ),
    (
        'audit: reconstruction bounds',
        'primia/audit/verdict.py',
        '        elif value > bound:',
        '        elif False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'audit: unmeasured attack fails',
        'primia/audit/verdict.py',
        '        if value is None or math.isnan(value):',
        '        if False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'audit: membership AUC bound',
        'primia/audit/verdict.py',
        '        if not auc <= m.max_auc:  # NaN fails',
        '        if False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'audit: membership TPR bound',
        'primia/audit/verdict.py',
        '        elif not figures.get("mia_tpr_at_1pct_fpr", 0.0) <= m.max_tpr_at_1pct_fpr:',
        '        elif False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'audit: membership required',
        'primia/audit/verdict.py',
        '    elif m.required:',
        '    elif False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'audit: members matched to non-members by class',
        'primia/audit/round_audit.py',
        '    members, nonmembers = _matched(members, nonmembers, rng)',
        '    pass',
        'tests/unit/test_audit.py::test_a_class_mix_difference_alone_is_not_membership',
    ),
    (
        'audit: event names the committed checkpoint',
        'primia/audit/event.py',
        '    if named != (committed.bucket, committed.key, committed.sha256):',
        '    if False:',
        'tests/unit/test_audit.py::test_an_event_naming_another_checkpoint_or_run_is_refused',
    ),
    (
        'audit: lower bound <= accountant',
        'primia/audit/verdict.py',
        '        if not lb <= acc:',
        '        if False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'audit: DP noise in the view',
        'primia/audit/threat.py',
        '        if t.dp == "sample" and t.noise_multiplier > 0:',
        '        if False:',
        'tests/unit/test_audit.py::test_dp_noise_defeats_the_inversion_and_the_audit_passes',
    ),
    (
        'audit: per-sample clipping',
        'primia/audit/threat.py',
        '            g = _clip_rows(g, t.clip)',
        '            pass',
        'tests/unit/test_audit.py::test_dp_clips_each_sample_and_adds_noise_of_the_planned_scale',
    ),
    (
        'audit: secure view is the mean',
        'primia/audit/round_audit.py',
        '        return [("aggregate", replace(plan.threat, hospitals=plan.secure_hospitals)), '
        '("single", plan.threat)]',
        '        return [("single", plan.threat)]',
        'tests/integration/test_privacy_audit.py::test_embedded_rounds_are_audited_by_the_subflow',
    ),
    (
        'audit: halt on FAIL',
        'tasks/audit.py',
        '    if not verdict.passed and policy.halt_on_fail:',
        '    if False:',
        'tests/integration/test_privacy_audit.py::test_a_failed_audit_halts_training_when_the_policy_says_so',
    ),
    (
        "audit: version carries its round's verdict",
        'primia/registry/release.py',
        '        **release.audit,\n',
        '',
        'tests/integration/test_privacy_audit.py::test_embedded_rounds_are_audited_by_the_subflow',
    ),
    (
        'audit: smooth surrogate for ReLU networks',
        'primia/audit/inversion.py',
        '        smooth = cfg.smooth_beta is not None and restart % 2 == 0  # odd restarts: the exact loss',
        '        smooth = False',
        'tests/unit/test_audit.py::test_inversion_recovers_an_mri_from_the_small_cnn_at_64px_and_the_audit_fails',
    ),
    (
        'audit: exact-loss restarts',
        'primia/audit/inversion.py',
        '        smooth = cfg.smooth_beta is not None and restart % 2 == 0  # odd restarts: the exact loss',
        '        smooth = cfg.smooth_beta is not None',
        'tests/unit/test_audit.py::test_inversion_recovers_a_leaky_update_and_the_audit_fails',
    ),
    (
        'audit: a silent hospital fails the verdict',
        'primia/audit/verdict.py',
        '        if missing and m.required:',
        '        if False:',
        'tests/unit/test_audit.py::test_verdict_fails_closed',
    ),
    (
        'agent: an audit dispatch neither trains nor aggregates',
        'primia/federation/agent.py',
        '        if train or stats or secagg is not None:  # else "audit" would carry an update past the floor below',
        '        if False:',
        'tests/unit/test_agent_plan.py::test_a_membership_audit_is_figures_only_and_the_hospital_may_opt_out',
    ),
    (
        'agent: a hospital may refuse membership audits',
        'primia/federation/agent.py',
        '        if not agent.membership_audit:',
        '        if False:',
        'tests/unit/test_agent_plan.py::test_a_membership_audit_is_figures_only_and_the_hospital_may_opt_out',
    ),
    (
        'coordinator: an audit answer must be exactly the figures',
        'primia/federation/rounds.py',
        '            check_membership_report(dict(verdict.result.metrics))',
        '            pass',
        'tests/adversarial/test_membership_audit.py::test_an_answer_without_the_figures_or_with_a_forged_key_is_refused',
    ),
    (
        'audit: membership figures finite and in range',
        'primia/audit/figures.py',
        '        if k in MEMBERSHIP_RATES and not low <= v <= 1.0:',
        '        if False:',
        'tests/unit/test_audit.py::test_a_membership_report_is_exactly_finite_figures_in_range',
    ),
    (
        'hospital: audits only the round\'s own model',
        'primia/federation/hospital_audit.py',
        '    if global_ref.round != server_round:  # else any committed model could be named, round after round',
        '    if False:',
        'tests/adversarial/test_membership_audit.py::test_an_audit_of_another_rounds_model_is_refused_by_the_hospital',
    ),
    (
        'postgres: passwords asked (SCRAM)',
        'infra/postgres.py',
        '"--auth=scram-sha-256"',
        '"--auth=trust"',
        'tests/integration/test_stack.py::test_postgresql_asks_for_the_password_and_hides_it',
    ),
    (
        'postgres: MLflow store URL kept off argv',
        'infra/stack.py',
        '    cmd = [bin_path("mlflow"), "server", "--app-name", "basic-auth", "--artifacts-destination",',
        '    cmd = [bin_path("mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", store, '
        '"--artifacts-destination",',
        'tests/integration/test_stack.py::test_postgresql_asks_for_the_password_and_hides_it',
    ),
    (
        'weights reader: offsets inside the data',
        'primia/store/weights.py',
        '                and 0 <= offsets[0] <= offsets[1] <= len(body)):',
        '                and True):',
        'tests/unit/test_store_read_path.py::test_a_malformed_payload_is_refused_naming_the_fault',
    ),
    (
        'weights reader: tensors tile the data',
        'primia/store/weights.py',
        '        if begin != covered:',
        '        if False:',
        'tests/unit/test_store_read_path.py::test_a_malformed_payload_is_refused_naming_the_fault',
    ),
    (
        'in-place read: download digest checked',
        'primia/store/envelope.py',
        '    _check_digest(digest, expected_sha256, where)\n    view = memoryview(buf)',
        '    view = memoryview(buf)',
        'tests/unit/test_store_read_path.py::test_in_place_the_download_digest_is_checked_against_the_reference',
    ),
    (
        'in-place read: failed plaintext wiped',
        'primia/store/envelope.py',
        '        view[:] = bytes(len(view))  # unauthenticated bytes must not outlive the failure',
        '        pass',
        'tests/unit/test_store_read_path.py::test_in_place_a_flipped_byte_fails_and_leaves_nothing_behind',
    ),
    (
        'agent wakes on the scheduled-run event',
        'infra/agent_worker.py',
        '                                                  lambda: worker._runs_task_group is not None))',
        '                                                  lambda: False))',
        'tests/integration/test_distributed.py::test_a_run_scheduled_on_its_pool_wakes_the_agent_before_its_next_poll',
    ),
    (
        'hospital: key exchange through before training',
        'primia/federation/hospital.py',
        '        exchange.result()  # the exchange went through (or its error is raised) before any privacy is spent',
        '        pass',
        'tests/unit/test_training.py::test_the_key_exchange_runs_beside_the_model_download_and_the_data_read',
    ),
    (
        'agent wakes only for its own pool',
        'infra/agent_wake.py',
        '                if ready() and on_pool(event, pool):',
        '                if ready():',
        'tests/unit/test_agent_wake.py::test_it_polls_for_events_on_its_pool_only_and_reconnects_after_a_drop',
    ),
    (
        'postgres: service roles are not superusers',
        'infra/postgres.py',
        'ROLE {} LOGIN NOSUPERUSER NOCREATEDB',
        'ROLE {} LOGIN SUPERUSER NOCREATEDB',
        'tests/integration/test_stack.py::test_prefect_and_mlflow_log_in_as_their_own_roles_without_superuser_powers',
    ),
    (
        'postgres: only the owner connects',
        'infra/postgres.py',
        '                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))',
        '                pass',
        'tests/integration/test_stack.py::test_prefect_and_mlflow_log_in_as_their_own_roles_without_superuser_powers',
    ),
]


def main(only: list[str]) -> int:
    results = []
    for name, f, old, new, test in MUTATIONS:
        if only and name not in only:
            continue
        path = R / f
        src = path.read_text()
        if old not in src:
            results.append((name, "MUTATION NOT FOUND"))
            continue
        path.write_text(src.replace(old, new, 1))
        try:
            run = subprocess.run([str(R / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                  test], cwd=R, capture_output=True, text=True, timeout=600)
            results.append((name, "test FAILS (good)" if run.returncode != 0 else "test still PASSES (bad)"))
        finally:
            path.write_text(src)
    for n, res in results:
        print(f"{n:32s} {res}")
    return 0 if all(res.endswith("(good)") for _, res in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
