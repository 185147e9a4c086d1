"""Built-in job types; importing this package registers them."""

from jobs.handlers import demo, mail, numeric, shell, text, video, web  # noqa: F401
