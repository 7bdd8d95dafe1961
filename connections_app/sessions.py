"""Django's database sessions, read with one plain query (every signed-in page reads one)."""

from django.contrib.sessions.backends import db
from django.utils import timezone

from . import sql


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        found = None
        if self.session_key is not None:
            found = sql.get(
                self.model, session_key=self.session_key, expire_date__gt=timezone.now()
            )
        if found is None:
            self._session_key = None
        return found
