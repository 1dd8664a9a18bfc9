"""Browser tests: Debian's Chromium driven by Playwright against the four services as separate
processes, on the real Kafka, PostgreSQL and Keycloak."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.keycloak import Keycloak
from tests.support.platform import running_platform
from tests.support.services import REPO_ROOT

CHROMIUM = os.environ.get("REFLEXE_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling hosts this machine cannot reach.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "test-artifacts"


@dataclass(frozen=True)
class BrowserPlatform:
    services: dict[str, Any]
    browser: Any  # playwright's Browser
    token: Callable[..., Awaitable[dict[str, str]]]  # an Authorization header from Keycloak, by role and scope
    capacity: httpx.AsyncClient
    referral: httpx.AsyncClient
    idp: Any  # the Keycloak admin client: users of the test's own

    async def own_user(self, role: str, username: str | None = None, **scope: str) -> tuple[str, str]:
        """A person of this test's own in the test's Keycloak (a desk nurse of the test's department,
        an HAD's nurse of the test's HAD...), never a demo user of the realm: (user name, password).
        The password is random, so no other test logs in as her."""
        username = username or f"{role}-{secrets.token_hex(6)}"
        password = secrets.token_urlsafe(12)
        await self.idp.ensure_user(username, role, password, **scope)
        return username, password


@asynccontextmanager
async def browser_platform(topics, keycloak: Keycloak, tmp_path: Path) -> AsyncIterator[BrowserPlatform]:
    """The platform trusting the real Keycloak, a Chromium, and API clients for the test's own data."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run deploy/local/install-browser.sh"
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with running_platform(topics, tmp_path, OIDC_ISSUER=keycloak.issuer) as services, \
            async_playwright() as playwright, keycloak.client() as idp:

        async def token(role: str, **scope: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {await idp.token_for(role, **scope)}"}

        # Generous timeouts: two cores shared by four services, Kafka, PostgreSQL and Keycloak.
        async with httpx.AsyncClient(base_url=services["capacity"].url, timeout=30) as capacity, \
                httpx.AsyncClient(base_url=services["referral"].url, timeout=30) as referral:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                yield BrowserPlatform(services, browser, token, capacity, referral, idp)
            finally:
                await browser.close()


async def log_in(page, keycloak: Keycloak, username: str, password: str) -> None:
    """From the page's login link to Keycloak's own form, as a person does."""
    from playwright.async_api import expect

    await page.get_by_role("link", name="Se connecter").click()
    await expect(page.locator("#username")).to_be_visible(timeout=15_000)
    assert page.url.startswith(keycloak.issuer), page.url
    await page.locator("#username").fill(username)
    await page.locator("#password").fill(password)
    await page.locator("#kc-login").click()
