"""python -m reflexe_referral: run the referral service."""

from reflexe_common.serve import serve
from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.settings import ReferralSettings


def main() -> None:
    serve(build_app, ReferralSettings())


if __name__ == "__main__":
    main()
