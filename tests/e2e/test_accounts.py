"""Sign-up, log-in and log-out through the real pages, and what the browser is told
about the session cookie and the Content-Security-Policy."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import log_in

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_sign_up_with_password_validation_then_log_out_and_in(pages):
    context = pages.context()
    page = pages.page(context)
    name = f"newbie{uuid.uuid4().hex[:6]}"
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Display name").fill("New Person")
    page.get_by_label("Password", exact=True).fill("12345678")
    page.get_by_label("Password again").fill("12345678")
    page.get_by_role("button", name="Sign up").click()
    # Django's validators answer on the form; nothing is created.
    errors = page.locator(".field-errors").all_inner_texts()
    assert any("too common" in e for e in errors), errors
    assert any("entirely numeric" in e for e in errors), errors
    assert page.get_by_label("Username").input_value() == name  # kept for another try

    page.get_by_label("Password", exact=True).fill("a-Much-Better-passphrase-9")
    page.get_by_label("Password again").fill("a-Much-Better-passphrase-9")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/")
    assert page.locator(".me-name").inner_text() == "New Person"  # logged in at once

    cookie = next(c for c in context.cookies() if c["name"] == "sessionid")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/")
    assert page.get_by_role("navigation").get_by_role("link", name="Log in").is_visible()
    assert not any(c["name"] == "sessionid" for c in context.cookies())

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    assert "enter a correct username and password" in page.locator(".form-errors").inner_text()
    log_in(page, name, "a-Much-Better-passphrase-9")


def test_pages_need_a_login_and_send_a_strict_csp(pages, site):
    context = pages.context()
    page = pages.page(context)
    response = page.goto("/conversations/")
    assert "/accounts/login/?next=/conversations/" in page.url
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "img-src 'self' data: blob:;" in csp
    assert f"connect-src 'self' ws://127.0.0.1:{site.server.port}" in csp
    # Every form posting anything carries a CSRF token.
    for form in page.locator("form[method=post]").all():
        assert form.locator("input[name=csrfmiddlewaretoken]").count() == 1


def test_the_browser_enforces_the_policy_and_the_page_sanitizes_html(pages, site):
    """Defence in depth against model output that would leak data through an image: the
    server strips <img> (chat/rendering.py), the page strips it again (sanitize.js),
    and the CSP forbids loading images from any other origin."""
    pages.allow("Content Security Policy")  # the violations provoked below
    page = pages.page(pages.context("alice"))
    page.goto("/chat/sage/")
    page.wait_for_function("() => window.parley && window.parley.connection.state === 'open'")
    violations = page.evaluate(
        """async () => {
          const seen = [];
          const record = (e) => seen.push(e.violatedDirective);
          document.addEventListener('securitypolicyviolation', record);
          const img = document.createElement('img');
          img.src = 'https://images.example.com/leak.png?secret=1';
          document.body.append(img);
          const script = document.createElement('script');
          script.textContent = 'window.__inline = true';
          document.body.append(script);
          await new Promise((r) => setTimeout(r, 300));
          return {seen, inline: window.__inline === true};
        }"""
    )
    assert "img-src" in violations["seen"], violations
    assert "script-src-elem" in violations["seen"] or "script-src" in violations["seen"], violations
    assert violations["inline"] is False

    # HTML carrying an image, a script and a handler never reaches the page as such.
    html = page.evaluate(
        """() => {
          const [, item] = [null, window.parley.list.upsert({
            id: 999999, conversation: 0, seq: 999999, client_id: null,
            sender: {type: 'character', id: 1, name: 'Mallory', avatar: null},
            role: 'assistant', kind: 'text', text: 'x', status: 'complete',
            html: '<p onclick="alert(1)">hi <img src="https://evil.example/x.png"><script>alert(2)</script>'
              + '<a href="javascript:alert(3)">link</a> <a href="https://ok.example/">ok</a></p>',
            created_at: new Date().toISOString(), metadata: {}, reactions: {},
          }).item];
          return item.querySelector('.body').innerHTML;
        }"""
    )
    assert "<img" not in html and "<script" not in html and "onclick" not in html, html
    assert "javascript:" not in html, html
    assert 'href="https://ok.example/"' in html, html
