"""How async code runs database work."""

from functools import partial

from channels.db import database_sync_to_async

# Channels' default (thread_sensitive=True) runs every database call of the process in
# one thread, so a server process could only ever wait on one query at a time. Each
# call made through this is a whole unit of work (its own short transaction) with no
# thread affinity, so it runs on the shared pool, each thread with its own connection,
# and old connections are still closed around every call.
db_sync_to_async = partial(database_sync_to_async, thread_sensitive=False)
