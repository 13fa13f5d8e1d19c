from django.contrib.auth.models import AbstractUser
from django.db import models

from accounts.timezones import DEFAULT_TIME_ZONE, validate_time_zone


class User(AbstractUser):
    display_name = models.CharField(max_length=80, blank=True)
    avatar = models.ImageField(upload_to="avatars/users/", blank=True)
    # IANA name: daily and monthly usage quotas reset at midnight in this zone.
    time_zone = models.CharField(
        max_length=64, default=DEFAULT_TIME_ZONE, validators=[validate_time_zone]
    )

    @property
    def name(self) -> str:
        """What other people see: the display name, falling back to the username."""
        return self.display_name or self.username

    def __str__(self) -> str:
        return self.name
