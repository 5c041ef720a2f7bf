"""The headers of the login's own HTML pages (the development login form, error pages): no scripts and
no styles from anywhere, nothing cached, and never inside another site's frame, where a login form could
be overlaid (found missing by a security test)."""

from __future__ import annotations

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
