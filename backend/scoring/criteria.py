"""The named criteria presets a reward model can be asked to judge (alignment, aesthetics, motion, ...)."""

from __future__ import annotations

CRITERIA_PRESETS: dict[str, str] = {
    "alignment": "Prompt alignment: every object, attribute, count, colour, position and relation the prompt "
    "describes is present and correct, and nothing contradicts the prompt.",
    "aesthetics": "Aesthetics: pleasing composition, lighting and colour, a clear subject, and a polished, "
    "professional look.",
    "plausibility": "Plausibility: no artefacts, distortions or anatomical errors (hands, faces, limbs), "
    "physically coherent objects, lighting and perspective.",
    "text": "Text rendering: any text the prompt asks for is spelled exactly right, legible and well placed; "
    "no garbled letters.",
    "overall": "Overall quality: faithful to the prompt, visually appealing and free of defects.",
    "motion": "Motion quality: natural, smooth and physically plausible movement of the subjects and the camera "
    "with a meaningful amount of motion.",
    "temporal": "Temporal consistency: subjects, identities, colours and background stay consistent from frame "
    "to frame, with no flicker, popping or morphing.",
}
VIDEO_ONLY_PRESETS = ("motion", "temporal")
