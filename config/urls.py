from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from connections_app import signin

# Both sign-in pages, and the old password on both password change forms, count failed
# attempts (connections_app.signin, with django-axes).
admin.site.login_form = signin.AdminLoginForm

urlpatterns = [
    path("admin/password_change/", admin.site.admin_view(signin.admin_password_change)),
    path("admin/", admin.site.urls),
    path("accounts/login/", signin.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password_change/",
        signin.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="registration/password_change_finished.html"
        ),
        name="password_change_done",
    ),
    # Single sign-on: /oidc/authenticate/ and the provider's redirect URI /oidc/callback/
    # (connections_app.oidc; both answer 404 while OIDC is off).
    path("oidc/", include("mozilla_django_oidc.urls")),
    # No password reset pages: the app sends no reset mail (a forgotten password is reset by
    # an administrator, or with `manage.py changepassword`).
    path("", include("connections_app.urls")),
]

handler403 = "connections_app.views.forbidden"
