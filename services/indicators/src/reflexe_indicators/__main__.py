"""python -m reflexe_indicators: run the indicators service."""

from reflexe_common.serve import serve
from reflexe_indicators.entrypoints.app import build_app
from reflexe_indicators.settings import IndicatorsSettings


def main() -> None:
    serve(build_app, IndicatorsSettings())


if __name__ == "__main__":
    main()
