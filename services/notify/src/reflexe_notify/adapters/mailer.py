"""Sending e-mail over SMTP (aiosmtplib): MSSanté in production, a local server in tests."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from reflexe_notify.settings import NotifySettings


class Mailer:
    def __init__(self, settings: NotifySettings) -> None:
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._use_tls = settings.smtp_tls
        self._start_tls = settings.smtp_starttls
        self._timeout = settings.timeout_seconds
        self.sender = settings.smtp_from

    async def send(self, message: EmailMessage) -> str:
        """Sends one message; returns the server's answer. aiosmtplib.SMTPException when refused."""
        _, answer = await aiosmtplib.send(
            message, hostname=self._host, port=self._port, username=self._username, password=self._password,
            use_tls=self._use_tls, start_tls=self._start_tls, timeout=self._timeout,
        )
        return answer
