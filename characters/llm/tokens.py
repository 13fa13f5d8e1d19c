"""Token estimates for budgets and the offline responder's accounting (never for billing)."""

MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators around each turn


def estimate_tokens(text: str) -> int:
    """About four characters a token for English prose; rounds up so that "" is 0."""
    return (len(text) + 3) // 4
