"""The process_video job type: simulated work that reports progress."""

import hashlib

from jobs.handlers.validators import MAX_VIDEO_SECONDS, video_payload
from jobs.registry import JobContext, job_handler

RESOLUTIONS = ("640x360", "1280x720", "1920x1080", "3840x2160")
FRAMES_PER_SECOND = 30


@job_handler("process_video", validate=video_payload, timeout=MAX_VIDEO_SECONDS + 60)
def process_video(job: JobContext) -> dict:
    """Transcode a video (simulated), reporting progress as it goes."""
    url, duration, steps = job.payload["url"], job.payload["duration"], job.payload["steps"]
    for step in range(1, steps + 1):
        job.sleep(duration / steps)
        job.set_progress(step * 100 // steps)
    # Derived from the payload alone, so a retry produces the same result.
    digest = hashlib.sha256((url or "").encode()).hexdigest()
    return {
        "frames": max(1, round(duration * FRAMES_PER_SECOND)),
        "resolution": RESOLUTIONS[int(digest, 16) % len(RESOLUTIONS)],
        "output": f"videos/{digest[:16]}.mp4",
    }
