from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    display_name = models.CharField(max_length=80, blank=True)
    avatar = models.ImageField(upload_to="avatars/users/", blank=True)

    @property
    def name(self) -> str:
        """What other people see: the display name, falling back to the username."""
        return self.display_name or self.username

    def __str__(self) -> str:
        return self.name
