"""python -m reflexe_gateway: run the HL7 gateway (MLLP listener and its HTTP side)."""

from reflexe_common.serve import serve
from reflexe_gateway.entrypoints.app import build_app
from reflexe_gateway.settings import GatewaySettings


def main() -> None:
    serve(build_app, GatewaySettings())


if __name__ == "__main__":
    main()
