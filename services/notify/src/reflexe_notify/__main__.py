"""python -m reflexe_notify: run the notify service."""

from reflexe_common.serve import serve
from reflexe_notify.entrypoints.app import build_app
from reflexe_notify.settings import NotifySettings


def main() -> None:
    serve(build_app, NotifySettings())


if __name__ == "__main__":
    main()
