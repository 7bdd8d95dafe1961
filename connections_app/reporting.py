"""Error reports (the ones AdminEmailHandler mails) without credentials in them."""

import re

from django.views.debug import SafeExceptionReporterFilter


class SecretSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter (API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE), plus every
    VAULT_*, AUDIT_* and DATABASE_URL value.

    The names apply to settings, request.META (the whole process environment under
    runserver) and cookies. VAULT_ROLE_ID, for one, matches none of Django's own words, and
    DATABASE_URL carries the database password.
    """

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + r"|^VAULT_|^AUDIT_|DATABASE_URL",
        flags=re.IGNORECASE,
    )

    def cleanse_special_types(self, request, value):
        # An exception's repr shows its args, and a UnicodeError's hold the whole string it
        # failed on (a token in a header, say); its message, shown atop the report anyway, not.
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}"
        return super().cleanse_special_types(request, value)
