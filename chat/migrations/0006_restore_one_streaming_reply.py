"""0004 turned off the index of Message.conversation, and Django's schema editor, when it
drops the single-column indexes of that column, also dropped the partial unique index
`chat_one_streaming_reply` (a condition on `status` does not make it multi-column).
Put it back: dropped if it is still there (DROP INDEX IF EXISTS), then created."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0005_attachment"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="message", name="chat_one_streaming_reply"),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(status="streaming"),
                fields=("conversation",),
                name="chat_one_streaming_reply",
            ),
        ),
    ]
