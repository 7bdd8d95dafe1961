"""Who a single sign-on user is at the identity provider: its `sub`, never an email address
(addresses change hands; the provider's subject does not)."""

from django.conf import settings
from django.db import models


class OidcIdentity(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity"
    )
    sub = models.CharField(max_length=255, unique=True)  # OpenID Connect caps it at 255
    issuer = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "connections_app"
        verbose_name = "OIDC identity"
        verbose_name_plural = "OIDC identities"

    def __str__(self) -> str:
        return f"{self.issuer} {self.sub}"
