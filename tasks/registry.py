"""The coordinator's hospital registry, kept on the Prefect server as one `primia-hospital` block per
hospital, so it is visible in the Prefect UI (Blocks). Only public keys and the work pool are kept;
data paths never leave the hospital."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import Field

from primia.errors import ConfigError
from primia.federation.identity import PublicIdentity, create_identity, load_identity


class PrimiaHospital(Block):
    """A registered hospital agent of a primia federation."""

    _block_type_name = "primia hospital"
    _block_type_slug = "primia-hospital"
    _description = "A hospital registered with the primia coordinator: public keys and its work pool."

    hospital: str
    signing_public_key: str = Field(description="Ed25519, base64 raw")
    agreement_public_key: str = Field(description="X25519, base64 raw")
    fingerprint: str
    work_pool: str
    status: str = "active"
    registered_at: str = ""
    revoked_at: str = ""


def _block_name(hospital: str) -> str:
    return f"hospital-{hospital}" if not hospital.startswith("hospital-") else hospital


def register(public: PublicIdentity) -> PrimiaHospital:
    name = _block_name(public.hospital)
    existing = {r.hospital: r for r in list_hospitals()}.get(public.hospital)
    if existing is not None and existing.status == "active":
        raise ConfigError(f"hospital {public.hospital!r} is already registered (fingerprint {existing.fingerprint}): "
                          "revoke it first to register new keys")
    block = PrimiaHospital(
        hospital=public.hospital, signing_public_key=public.signing_public,
        agreement_public_key=public.agreement_public, fingerprint=public.fingerprint, work_pool=name,
        registered_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    block.save(name, overwrite=True)
    return block


def list_hospitals() -> list[PrimiaHospital]:
    with get_client(sync_client=True) as client:
        try:
            docs = client.read_block_documents_by_type(PrimiaHospital.get_block_type_slug())
        except PrefectHTTPStatusError as exc:  # the block type does not exist until the first registration
            if exc.response.status_code == 404:
                return []
            raise
    return sorted((PrimiaHospital.model_validate(d.data) for d in docs), key=lambda b: b.hospital)


def revoke(hospital: str) -> PrimiaHospital:
    records = {r.hospital: r for r in list_hospitals()}
    if hospital not in records:
        raise ConfigError(f"hospital {hospital!r} is not registered (registered: {sorted(records) or 'none'})")
    record = records[hospital]
    record.status, record.revoked_at = "revoked", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record.save(_block_name(hospital), overwrite=True)
    return record


def active_hospitals() -> dict[str, PrimiaHospital]:
    """Hospitals that may take part in future rounds."""
    return {r.hospital: r for r in list_hospitals() if r.status == "active"}


def ensure_registered(hospital: str, keys_dir: Path, passphrase: str | None = None) -> PrimiaHospital:
    """Register the hospital with its local identity (made if missing) unless that identity already is."""
    identity_file = keys_dir / "identity.json"
    public = load_identity(keys_dir, passphrase).public if identity_file.exists() else \
        create_identity(hospital, keys_dir, passphrase)
    entry = {r.hospital: r for r in list_hospitals()}.get(hospital)
    if entry is not None and entry.status == "active":
        if entry.fingerprint != public.fingerprint:
            raise ConfigError(f"hospital {hospital!r} is registered with other keys ({entry.fingerprint})")
        return entry
    return register(public)
