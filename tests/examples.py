"""The README's examples of the built-in job types, as data the tests submit and run.

Each one comes from the "Enqueueing jobs" section (with the options given
there) or the "Built-in job types" table, with the result the README
promises for it, where it promises one.
"""

from dataclasses import dataclass, field
from typing import Any

NO_RESULT = object()


@dataclass(frozen=True)
class Example:
    type: str
    payload: Any
    # enqueue() options the README passes with it.
    options: dict = field(default_factory=dict)
    result: Any = NO_RESULT

    def __str__(self):
        return f"{self.type}:{self.payload!r}"


EXAMPLES = [
    Example("send_email", {"to": "ada@example.com", "subject": "Thanks", "body": "..."}, result={"sent": 1}),
    Example("send_email", {"to": ["ada@example.com", "bob@example.com"], "subject": "Thanks", "body": "..."},
            result={"sent": 2}),
    Example("reverse_string", "hello world", {"priority": "high"}, result="dlrow olleh"),
    Example("reverse_string", {"text": "hello world"}, result="dlrow olleh"),
    Example("uppercase_text", "hello world", result="HELLO WORLD"),
    Example("uppercase_text", {"text": "a"}, result="A"),
    Example("fibonacci_calc", {"n": 10}, {"delay": 30, "max_retries": 5}, result=55),
    Example("fibonacci_calc", 10, result=55),
    Example("sleep", {"seconds": 5}, {"delay": 60}, result={"slept": 5}),
    Example("sleep", 1, result={"slept": 1}),
    Example("fail", {"message": "boom"}, {"max_retries": 0}),
    Example("fail", {"permanent": True}),
    Example("process_video", {"duration": 5}, {"unique_key": "video-42"}),
    Example("process_video", {"url": "https://example.com/cat.mp4", "duration": 1, "steps": 4}),
    # Validated and stored, never run here: they need the network.
    Example("scrape_website", {"url": "https://example.com"}, {"timeout": 20, "ttl": 3600}),
    Example("scrape_website", "https://example.com"),
    # Only with JOBS_ENABLE_SHELL_COMMANDS, only for staff, and only for a program in JOBS_SHELL_ALLOWED_COMMANDS.
    Example("run_command", {"argv": ["/bin/echo", "hello"]}),
    Example("run_command", {"argv": ["/bin/echo", "hello"], "timeout": 5}),
]


def examples(*types: str) -> list[Example]:
    """Return the examples of `types`, or all of them."""
    return [example for example in EXAMPLES if not types or example.type in types]
