"""Progress-note formats (SOAP, DAP, BIRP, GIRP and a practice's own): their sections.

    NoteFormats([practice_dir, ...])   index.json in each directory, built-ins first;
                                       a practice adds or overrides a format without code
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from notes import NotesError

BUILTIN = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    prompt: str


@dataclass(frozen=True)
class NoteFormat:
    id: str
    title: str
    sections: tuple[Section, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.sections)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title,
                "sections": [{"key": s.key, "title": s.title, "prompt": s.prompt}
                             for s in self.sections]}


class NoteFormats:
    def __init__(self, directories: Sequence[Path] = ()) -> None:
        self.formats: dict[str, NoteFormat] = {}
        for directory in (BUILTIN, *directories):
            index = Path(directory) / "index.json"
            if not index.exists():
                continue
            for entry in json.loads(index.read_text()).get("formats", []):
                sections = tuple(Section(str(s["key"]), str(s["title"]), str(s.get("prompt", "")))
                                 for s in entry["sections"])
                if not sections or len({s.key for s in sections}) != len(sections):
                    raise NotesError("bad_format", f"format {entry['id']!r} needs distinct "
                                                   "section keys")
                self.formats[str(entry["id"])] = NoteFormat(str(entry["id"]),
                                                            str(entry["title"]), sections)

    def get(self, format_id: str) -> NoteFormat:
        try:
            return self.formats[format_id]
        except KeyError:
            raise NotesError("unknown_format", f"There is no note format {format_id!r}.",
                             f"Choose one of {', '.join(self.formats)}.") from None
