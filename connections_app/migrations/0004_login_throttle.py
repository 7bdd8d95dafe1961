# Failed sign-ins for the login throttle (issue 6).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("connections_app", "0003_audit_review")]

    operations = [
        migrations.CreateModel(
            name="LoginFailure",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("username_digest", models.CharField(max_length=64)),
                ("address", models.CharField(blank=True, max_length=45)),
                ("created_at", models.DateTimeField(db_index=True)),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["username_digest", "created_at"], name="login_failure_user_idx"
                    ),
                    models.Index(
                        fields=["address", "created_at"], name="login_failure_address_idx"
                    ),
                ],
            },
        ),
    ]
