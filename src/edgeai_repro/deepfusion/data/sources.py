"""Where records come from: the user's JSON/JSONL files and the paper's hub datasets (MMedBench's
archive with its official split, FiQA's rows)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion.data.records import Record, record_from


@dataclass
class Pools:
    """Records a source holds: one pool (split by us into devices, test and public data) or, when
    the source has its own test split, the train pool (devices and public data) and the test pool."""

    train: list[Record]
    test: list[Record] | None = None
    skipped: int = 0  # rows that are not a record of the case (e.g. multi-answer questions)


def jsonl_rows(text: str, where: str) -> list[tuple[str, object]]:
    """JSON Lines as its specification has it: one value per line, lines separated by "\\n" only
    (str.splitlines() would also split at U+2028, U+2029 and other breaks a JSON string may hold);
    blank lines skipped. Returns (where the record is: "<file> line <n>", value)."""
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"{where} line {n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{where} line {n} is not valid JSON ({exc.msg} at column {exc.colno}); fix that line."
            ) from None
    return rows


def _rows(path: Path) -> list[tuple[str, object]]:
    try:
        text = path.read_text(encoding="utf-8", errors="strict") if path.stat().st_size else ""
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    if path.suffix == ".jsonl":
        rows = jsonl_rows(text, str(path))
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix the file."
            ) from None
        rows = [(f"{path} record {i}", r) for i, r in enumerate(value)] if isinstance(value, list) else value
    if not isinstance(rows, list) or not rows:
        raise ConfigError(
            f"{path} holds no records; it needs a non-empty JSON list or one JSON object per line."
        )
    return rows


def _split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{ext}" for ext in (".jsonl", ".json") if (folder / f"{split}{ext}").is_file()]
    return found[0] if found else None


def load_local(path: str | Path, domain: str, key: str = "deepfusion.data.path") -> Pools:
    """Records in the case's schema from a JSON list or JSONL file (one pool), or from a folder
    holding train.jsonl and test.jsonl (.json also read): the folder's split is kept."""
    path = Path(path)
    if path.is_dir():
        train, test = _split_file(path, "train"), _split_file(path, "test")
        if train is None or test is None:
            raise ConfigError(
                f"{key}={str(path)!r} is a folder without train.jsonl and test.jsonl; put the two "
                "splits there or point the key at one .jsonl file."
            )
        return Pools(*[[record_from(domain, r, where) for where, r in _rows(f)] for f in (train, test)])
    if not path.is_file():
        raise ConfigError(
            f"{key}={str(path)!r} does not exist; point it at a .json or .jsonl file (or a folder "
            "with train.jsonl and test.jsonl)."
        )
    return Pools([record_from(domain, r, where) for where, r in _rows(path)])


# The hub datasets the paper names, as they are published.
MMEDBENCH_LANGUAGES = ("English", "Chinese", "Japanese", "French", "Russian", "Spanish")


def mmedbench_records(archive: str | Path, languages: list[str]) -> Pools:
    """MMedBench's official split from its archive as the hub ships it (MMedBench.zip:
    MMedBench/Train/<Language>.jsonl and MMedBench/Test/<Language>.jsonl) or from that folder
    unpacked. Each record's language is its sub-domain. Questions whose answer is not one option
    (some Japanese ones have several) are skipped and counted."""
    import zipfile

    unknown = [lang for lang in languages if lang not in MMEDBENCH_LANGUAGES]
    if unknown or not languages:
        raise ConfigError(
            f"deepfusion.cases.<case>.languages={list(languages)} names no MMedBench language or an "
            f"unknown one ({', '.join(unknown)}); use some of: {', '.join(MMEDBENCH_LANGUAGES)}."
        )
    archive = Path(archive)
    if archive.is_dir():
        names = [str(p.relative_to(archive)) for p in archive.rglob("*.jsonl")]
        read = lambda name: (archive / name).read_text()
    else:
        zf = zipfile.ZipFile(archive)
        names = zf.namelist()
        read = lambda name: zf.read(name).decode()
    pools, skipped = {}, 0
    for split in ("Train", "Test"):
        out: list[Record] = []
        for lang in languages:
            name = next((n for n in names if n.endswith(f"{split}/{lang}.jsonl")), None)
            if name is None:
                raise ConfigError(
                    f"{archive} has no {split}/{lang}.jsonl; it must be MMedBench's archive "
                    "(MMedBench.zip) or that archive unpacked."
                )
            for where, raw in jsonl_rows(read(name), f"{archive} {name}"):
                if not isinstance(raw.get("options"), dict) or raw.get("answer_idx") not in raw["options"]:
                    skipped += 1
                    continue
                out.append(record_from("medical", {**raw, "subdomain": lang}, where))
        pools[split] = out
    return Pools(pools["Train"], pools["Test"], skipped)


def fiqa_records(rows) -> Pools:
    """FinGPT's fiqa_qa rows (instruction, input, output; one `train` split of 17,110 rows): one
    pool, split by us."""
    return Pools([record_from("finance", dict(r), f"fiqa_qa row {i}") for i, r in enumerate(rows)])


def load_hub(
    repo: str, domain: str, languages: list[str] | None = None
) -> Pools:  # pragma: no cover - network
    """The case's hub dataset: MMedBench's archive (its official split, `languages`) or FiQA's
    rows (one pool). Offline: a pre-filled HF cache works; otherwise one sentence."""
    try:
        if domain == "medical":
            import huggingface_hub

            return mmedbench_records(
                huggingface_hub.hf_hub_download(repo, "MMedBench.zip", repo_type="dataset"),
                list(languages or ["English"]),
            )
        import datasets

        return fiqa_records(datasets.load_dataset(repo, split="train"))
    except ImportError:
        raise ConfigError(
            "deepfusion.data.source=hub needs the `datasets` package; pip install -e '.[paper]'."
        ) from None
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"could not load {repo!r} from the hub ({type(exc).__name__}); with no network use "
            "deepfusion.data.source=synthetic or your own files (source=local)."
        ) from None


def save_jsonl(records: list[Record], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
