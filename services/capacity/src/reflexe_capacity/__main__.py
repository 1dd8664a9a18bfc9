"""python -m reflexe_capacity: run the capacity service."""

from reflexe_common.serve import serve
from reflexe_capacity.entrypoints.app import build_app
from reflexe_capacity.settings import CapacitySettings


def main() -> None:
    serve(build_app, CapacitySettings())


if __name__ == "__main__":
    main()
