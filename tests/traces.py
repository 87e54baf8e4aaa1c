"""Realistic realtime traces (beta and GA spellings), built the way the voice agent sends them."""

from __future__ import annotations

import base64
import itertools
import json

_ids = itertools.count(1)

GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}


def ev(type_: str, ga: bool = False, **fields) -> dict:
    if ga:
        type_ = GA.get(type_, type_)
    return {"type": type_, "event_id": f"event_{next(_ids)}", **fields}


def session_created(session_id: str = "sess_1") -> dict:
    return ev("session.created", session={"id": session_id, "object": "realtime.session"})


def user_item(item_id: str, ga: bool = False) -> dict:
    return ev("conversation.item.created", ga, item={
        "id": item_id, "type": "message", "role": "user", "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}]})


def transcription(item_id: str, text: str) -> dict:
    return ev("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
              transcript=text)


def transcription_failed(item_id: str) -> dict:
    return ev("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
              error={"type": "transcription_error", "code": "audio_unintelligible", "message": "could not hear"})


def pcm_b64(samples: int = 480, value: int = 1000) -> str:
    return base64.b64encode(value.to_bytes(2, "little", signed=True) * samples).decode()


def assistant_turn(resp_id: str, item_id: str, parts: list[str], *, ga: bool = False, status: str = "completed",
                   audio: bool = True, done_transcript: bool = True) -> list[dict]:
    out = [ev("response.created", response={"id": resp_id, "status": "in_progress", "output": []}),
           ev("response.output_item.added", response_id=resp_id, output_index=0,
              item={"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []})]
    for part in parts:
        out.append(ev("response.audio_transcript.delta", ga, response_id=resp_id, item_id=item_id,
                      output_index=0, content_index=0, delta=part))
        if audio:
            out.append(ev("response.audio.delta", ga, response_id=resp_id, item_id=item_id,
                          output_index=0, content_index=0, delta=pcm_b64()))
    if done_transcript:
        out.append(ev("response.audio_transcript.done", ga, response_id=resp_id, item_id=item_id,
                      output_index=0, content_index=0, transcript="".join(parts)))
    out.append(ev("response.output_item.done", response_id=resp_id, output_index=0,
                  item={"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "audio", "transcript": "".join(parts)}]}))
    out.append(response_done(resp_id, status))
    return out


def function_call_item(call_id: str, name: str, arguments, item_id: str | None = None,
                       status: str = "completed") -> dict:
    return {"id": item_id or f"item_{call_id}", "type": "function_call", "status": status, "name": name,
            "call_id": call_id, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}


def function_call_done(resp_id: str, call_id: str, name: str, arguments, status: str = "completed") -> dict:
    return ev("response.output_item.done", response_id=resp_id, output_index=1,
              item=function_call_item(call_id, name, arguments, status=status))


def response_done(resp_id: str, status: str = "completed", output: list | None = None) -> dict:
    return ev("response.done", response={"id": resp_id, "status": status, "output": output or []})


def speech_started(item_id: str = "item_U9") -> dict:
    return ev("input_audio_buffer.speech_started", audio_start_ms=1200, item_id=item_id)


class Voice:
    """One voice agent's session, in GA or beta spelling."""

    def __init__(self, ga: bool, session_id: str = "sess_u"):
        self.ga, self.session_id = ga, session_id

    def t(self, beta: str) -> str:
        return GA.get(beta, beta) if self.ga else beta

    def session(self) -> list[dict]:
        sess = {"id": self.session_id, "object": "realtime.session"}
        return [ev("session.created", session=sess), ev("session.updated", session=sess)]

    def user(self, item_id: str, text: str | None) -> list[dict]:
        item = {"id": item_id, "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        out = [ev("input_audio_buffer.speech_started", audio_start_ms=100, item_id=item_id),
               ev("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id=item_id),
               ev("input_audio_buffer.committed", previous_item_id=None, item_id=item_id),
               ev(self.t("conversation.item.created"), previous_item_id=None, item=item)]
        if self.ga:
            out.append(ev("conversation.item.done", previous_item_id=None, item=item))
        if text is not None:
            out.append(ev("conversation.item.input_audio_transcription.completed", item_id=item_id,
                          content_index=0, transcript=text))
        return out

    def created(self, rid: str) -> dict:
        return ev("response.created", response={"id": rid, "object": "realtime.response", "status": "in_progress",
                                                "output": []})

    def said(self, rid: str, item_id: str, parts: list[str], *, index: int = 0, finish: bool = True,
             audio: bool = True) -> list[dict]:
        where = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
        out = [ev("response.output_item.added", response_id=rid, output_index=index,
                  item={"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                        "content": []})]
        for p in parts:
            out.append(ev(self.t("response.audio_transcript.delta"), **where, delta=p))
            if audio:
                out.append(ev(self.t("response.audio.delta"), **where, delta=pcm_b64(240, 900)))
        if finish:
            out.append(ev(self.t("response.audio.done"), **where))
            out.append(ev(self.t("response.audio_transcript.done"), **where, transcript="".join(parts)))
            out.append(ev("response.output_item.done", response_id=rid, output_index=index,
                          item=self.message(item_id, "".join(parts))))
        return out

    def message(self, item_id: str, text: str, status: str = "completed") -> dict:
        kind = "output_audio" if self.ga else "audio"
        return {"id": item_id, "type": "message", "role": "assistant", "status": status,
                "content": [{"type": kind, "transcript": text}]}

    @staticmethod
    def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
        return {"id": item_id, "type": "function_call", "status": status, "name": name, "call_id": call_id,
                "arguments": arguments}

    def call(self, rid: str, item_id: str, call_id: str, name: str, arguments: str, *, index: int = 1,
             pieces: int = 4) -> list[dict]:
        """A function call as the server streams it: added, argument deltas, done events."""
        out = [ev("response.output_item.added", response_id=rid, output_index=index,
                  item=self.call_item(item_id, call_id, name, "", "in_progress"))]
        step = max(1, -(-len(arguments) // pieces))
        for i in range(0, len(arguments), step):
            out.append(ev("response.function_call_arguments.delta", response_id=rid, item_id=item_id,
                          output_index=index, call_id=call_id, delta=arguments[i:i + step]))
        out.append(ev("response.function_call_arguments.done", response_id=rid, item_id=item_id,
                      output_index=index, call_id=call_id, name=name, arguments=arguments))
        out.append(ev("response.output_item.done", response_id=rid, output_index=index,
                      item=self.call_item(item_id, call_id, name, arguments)))
        return out

    @staticmethod
    def done(rid: str, output: list | None = None, status: str = "completed") -> dict:
        details = {"type": status, "reason": "turn_detected"} if status == "cancelled" else None
        return ev("response.done", response={"id": rid, "object": "realtime.response", "status": status,
                                             "status_details": details, "output": output or []})


def user_ga(item_id: str, deltas: list[str] | None, text: str | None) -> list[dict]:
    """A GA user turn: buffer events, item added then done, transcription deltas, completed."""
    item = {"id": item_id, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]}
    out = [ev("input_audio_buffer.speech_started", audio_start_ms=10, item_id=item_id),
           ev("input_audio_buffer.speech_stopped", audio_end_ms=800, item_id=item_id),
           ev("input_audio_buffer.committed", previous_item_id=None, item_id=item_id),
           ev("conversation.item.added", previous_item_id=None, item=item),
           ev("conversation.item.done", previous_item_id=None, item=item)]
    out += [ev("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=d)
            for d in deltas or []]
    if text is not None:
        out.append(ev("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                      transcript=text, usage={"type": "tokens", "total_tokens": 7}))
    return out


# --- out-of-band responses (response.create with conversation "none"), text-only items ---

def aside(rid: str, modalities: list[str], purpose: str, ga: bool = True) -> dict:
    """``response.created`` of an out-of-band response: ``conversation_id`` null, its output
    modalities (GA ``output_modalities``, beta ``modalities``) and ``metadata``."""
    return ev("response.created", response={
        "id": rid, "object": "realtime.response", "status": "in_progress", "status_details": None,
        "conversation_id": None, ("output_modalities" if ga else "modalities"): modalities,
        "metadata": {"purpose": purpose}, "output": [], "usage": None})


def aside_done(rid: str, output: list, purpose: str, status: str = "completed", details=None) -> dict:
    return ev("response.done", response={
        "id": rid, "object": "realtime.response", "status": status, "status_details": details,
        "conversation_id": None, "metadata": {"purpose": purpose}, "output": output})


def text_item(item_id: str, text: str, status: str = "completed", ga: bool = True) -> dict:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text" if ga else "text", "text": text}]}


def text_said(rid: str, item_id: str, text: str, index: int, ga: bool = True) -> list[dict]:
    """A text-only output item: added, one delta per word, done events."""
    where = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1][:-1]
    return [ev("response.output_item.added", response_id=rid, output_index=index,
               item={**text_item(item_id, "", "in_progress", ga), "content": []}),
            *[ev("response.text.delta", ga, **where, delta=w) for w in words],
            ev("response.text.done", ga, **where, text=text),
            ev("response.output_item.done", response_id=rid, output_index=index, item=text_item(item_id, text, ga=ga))]
