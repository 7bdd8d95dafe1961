from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from connections_app import throttle

# Both sign-in pages, and the old password on both password change forms, count failed
# attempts (connections_app.throttle).
admin.site.login_form = throttle.AdminLoginForm

urlpatterns = [
    path("admin/password_change/", admin.site.admin_view(throttle.admin_password_change)),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=throttle.LoginForm),
        name="login",
    ),
    path(
        "accounts/password_change/",
        throttle.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("connections_app.urls")),
]

handler403 = "connections_app.views.forbidden"
