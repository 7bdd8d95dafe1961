"""Error reports (the ones AdminEmailHandler mails) without credentials in them."""

import re

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host, or scheme://token@host: credentials in the URL's authority.
_URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.\-]*://[^\s@]*@", flags=re.IGNORECASE)


class SecretSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter (API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE), plus every
    VAULT_*, AUDIT_*, DATABASE_URL and EMAIL_URL value, and any value holding a URL with
    credentials, whatever its name.

    The names apply to settings, request.META (the whole process environment under
    runserver) and cookies. VAULT_ROLE_ID, for one, matches none of Django's own words, and
    DATABASE_URL and EMAIL_URL carry passwords, as a REDIS_URL or BROKER_URL may.
    """

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern
        + r"|^VAULT_|^AUDIT_|DATABASE_URL|EMAIL_URL|^NOTIFY_APPRISE|^OIDC_RP_CLIENT_SECRET",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key, value):
        # Nested values (dicts, lists, tuples) come back through here too. str() for lazy
        # strings, which pass for str but which re cannot search.
        if isinstance(value, str) and _URL_WITH_CREDENTIALS.search(str(value)):
            return self.cleansed_substitute
        return super().cleanse_setting(key, value)

    def cleanse_special_types(self, request, value):
        # An exception's repr shows its args, and a UnicodeError's hold the whole string it
        # failed on (a token in a header, say); its message, shown atop the report anyway, not.
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}"
        return super().cleanse_special_types(request, value)
