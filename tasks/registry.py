"""The Prefect UI's read-only view of the signed roster: one `primia-hospital` block per hospital.

Nobody trusts these blocks: the coordinator's server has no say in who is a hospital. Every party
reads the signed roster (primia.federation.roster) and checks it against the authority key it
pinned; the blocks are written from that roster after each publication, for people to look at."""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import Field

from primia.federation.roster import Roster


class PrimiaHospital(Block):
    """A hospital of a primia federation, as its signed roster says (a read-only view)."""

    _block_type_name = "primia hospital"
    _block_type_slug = "primia-hospital"
    _description = ("A hospital on the federation's signed roster: public keys, storage and work pool. A view for "
                    "the UI; every party checks the signed roster itself.")

    hospital: str
    signing_public_key: str = Field(description="Ed25519, base64 raw")
    agreement_public_key: str = Field(description="X25519, base64 raw")
    fingerprint: str
    work_pool: str
    bucket: str = ""
    status: str = "active"
    roster_version: int = 0


def _block_name(hospital: str) -> str:
    return f"hospital-{hospital}" if not hospital.startswith("hospital-") else hospital


def publish_view(roster: Roster) -> None:
    """Write one block per hospital from a roster that was just verified and published."""
    for h, e in roster.hospitals.items():
        PrimiaHospital(hospital=h, signing_public_key=e.signing_public_key, agreement_public_key=e.agreement_public_key,
                       fingerprint=e.fingerprint, work_pool=e.pool, bucket=e.bucket, status=e.status,
                       roster_version=roster.version).save(_block_name(h), overwrite=True)


def list_view() -> list[PrimiaHospital]:
    with get_client(sync_client=True) as client:
        try:
            docs = client.read_block_documents_by_type(PrimiaHospital.get_block_type_slug())
        except PrefectHTTPStatusError as exc:  # the block type does not exist until the first publication
            if exc.response.status_code == 404:
                return []
            raise
    return sorted((PrimiaHospital.model_validate(d.data) for d in docs), key=lambda b: b.hospital)
