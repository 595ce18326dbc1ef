"""The first request for a file, and the plan its answer allows.

The probe is a ranged GET (``bytes=0-N``, N the end of the first segment when the manifest gives the size,
else of one minimal segment): a 206 proves range support and tells the size, and its connection goes on to
read the rest of the first segment (the first chunk of a big file). With a Condition from an earlier run
it is also a conditional GET, and a 304 ends the file there. When the primary fails, the mirrors are asked in turn.
"""

from __future__ import annotations

from ..credentials import redact_url
from ..errors import PermanentError, TransientError, VerifyError
from ..values import Condition, Job
from . import heads, net, plan
from .plan import Plan
from .transfer import Handoff, Transfer


def first(
    job: Job, transfer: Transfer, condition: Condition | None, notes: list[str]
) -> tuple[Handoff, tuple[str, ...]]:
    """The probe's answer, from the first source that gives one; the sources after it may serve segments."""
    sources = (job.url, *job.mirrors)
    gone_everywhere = True
    for i, source in enumerate(sources):
        try:
            head, body = transfer.probe(source, conditional_headers(condition) if i == 0 else {}, _last(job))
        except (TransientError, PermanentError) as exc:
            gone_everywhere = gone_everywhere and isinstance(exc, PermanentError) and exc.status in heads.GONE
            if i < len(sources) - 1:
                notes.append(f"{redact_url(source)} failed ({exc}); trying the next mirror")
                continue
            if isinstance(exc, PermanentError) and exc.status in heads.GONE and not gone_everywhere:
                # The last mirror has no such file, but an earlier source failed otherwise: it may still have it.
                raise PermanentError(str(exc), code=exc.code) from None
            raise
        return Handoff(head, body), sources[i + 1 :]
    raise AssertionError("unreachable: the last source raises")


def _last(job: Job) -> int:
    """The last byte the probe asks for: the first segment's when the manifest gives the size, else that of
    one minimal segment. An open-ended probe would make the server push the whole file into a connection
    that is dropped once the first segment is read: megabytes sent for nothing.
    """
    settings = job.settings
    if job.size:
        end = _layout(job.size, job)[0].end
        assert end is not None  # a known size splits into closed ranges
        return end - 1
    return settings.min_segment_size - 1


def _layout(size: int, job: Job) -> tuple[plan.Segment, ...]:
    settings = job.settings
    return plan.layout(size, settings.segments, settings.min_segment_size, settings.chunk_size)


def conditional_headers(condition: Condition | None) -> dict[str, str]:
    if condition is None:
        return {}
    if condition.etag:
        return {"If-None-Match": condition.etag}
    if condition.last_modified:
        return {"If-Modified-Since": condition.last_modified}
    return {}  # --revalidate of a file whose server sent no validators: a plain GET, its bytes compared


def plan_for(job: Job, head: net.Head, notes: list[str]) -> tuple[Plan, bool]:
    """The plan the probe's answer allows, and whether its body can serve the plan's first segment."""
    if head.content_encoding and head.content_encoding.lower() != "identity":
        notes.append(f"server sent Content-Encoding: {head.content_encoding}; stored as received")
    if job.size is not None and head.total is not None and head.total != job.size:
        raise VerifyError(f"size mismatch: manifest says {job.size} bytes, server has {head.total}")
    if head.ranged and head.total is None:
        # "bytes 0-N/*": a range of a file whose length the server does not state (RFC 9110 §14.4). The
        # probe's answer ends at N, which says nothing of the file's end: ask again for all of it, as one
        # stream that ends where the file does.
        notes.append("server did not state the file's length (Content-Range: .../*); fetched as one stream")
        return Plan(job.url, head.url, None, head.etag, head.last_modified, False, plan.single(None)), False
    ranged = head.ranged and head.total is not None
    segments = _layout(head.total, job) if ranged and head.total is not None else plan.single(head.total)
    return Plan(job.url, head.url, head.total, head.etag, head.last_modified, ranged, segments), True


def one_stream(job: Job, head: net.Head) -> str | None:
    """Why a file that would have had segments comes as one stream after the probe's answer; None if it does not."""
    if head.ranged:
        return None if head.total is not None else "no length: the server did not state it (Content-Range: .../*)"
    if head.total is None:
        return "server ignored Range and stated no length"
    return "server ignored Range (answered 200)" if len(_layout(head.total, job)) > 1 else None
