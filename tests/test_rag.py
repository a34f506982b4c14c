"""Retrieval (tunelab/rag): documents read as text, token-aware chunks with overlap, the index built atomically
and again for changed files only, hybrid search (BM25 + dense fused by rank), and every bad input in one line.
A tiny random encoder stands in for all-MiniLM-L6-v2 except where meaning matters (one test uses the real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tunelab import rag
from tunelab.errors import ConfigError, DataError, ModelNotAvailableError
from tunelab.rag import documents
from tunelab.rag.chunking import Chunking, chunk
from tunelab.rag.encoder import load_encoder
from tunelab.rag.index import fuse

FACTS = {
    "aero.md": "# Aero Fan\n\nThe Aero fan runs for 14 hours on one charge. Its model number is LK-4821.",
    "lumen.md": "# Lumen Cam\n\nThe Lumen camera records at night with infrared. A slow amber blink means pairing.",
    "policies/returns.md": "# Returns\n\nReturns are accepted within 45 days of delivery with the receipt.",
    "volt.txt": "The Volt plug switches 16 amperes and reports energy use every minute.",
}


def write_docs(folder: Path, files: dict[str, str] = FACTS) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return load_encoder(str(tiny_encoder_dir), device="cpu")


def settings(encoder_dir: Path, size: int = 64, overlap: int = 8) -> rag.IndexSettings:
    return rag.IndexSettings(encoder=str(encoder_dir), chunking=Chunking(size, overlap), device="cpu")


@pytest.fixture
def built(tmp_path, tiny_encoder_dir) -> Path:
    docs = write_docs(tmp_path / "docs")
    rag.build([docs], tmp_path / "index", settings(tiny_encoder_dir))
    return tmp_path / "index"


# --- chunking -------------------------------------------------------------------------------------------------


LONG = "\n\n".join(
    " ".join(f"Paragraph {p} sentence {s} says the value of item {p * 10 + s} is {p * s + 7} units." for s in range(9))
    for p in range(6)
)


@pytest.mark.parametrize("size,overlap", [(32, 0), (64, 8), (128, 30)])
def test_chunks_fit_the_size_keep_every_word_in_order_and_overlap(encoder, size, overlap):
    chunks = chunk(LONG, encoder.count_tokens, Chunking(size, overlap))
    assert len(chunks) > 1
    assert max(encoder.count_tokens(c) for c in chunks) <= size
    words, covered, repeated = LONG.split(), [], []
    for c in chunks:  # each chunk starts within what the chunks before it covered (the overlap) or right after
        cw = c.split()
        start = next(
            i for i in range(max(0, len(covered) - len(cw)), len(covered) + 1) if covered[i:] == cw[: len(covered) - i]
        )
        repeated.append(len(covered) - start)
        covered = covered[:start] + cw
        assert covered == words[: len(covered)]
    assert covered == words
    if overlap:  # every chunk after the first repeats some of the one before, within the overlap's tokens
        assert all(0 < n for n in repeated[1:])
        assert all(
            encoder.count_tokens(" ".join(c.split()[:n])) <= overlap for c, n in zip(chunks, repeated, strict=True)
        )
    else:
        assert repeated == [0] * len(chunks)


def test_a_word_longer_than_a_chunk_is_a_chunk_of_its_own(encoder):
    long_word = "x" * 400
    chunks = chunk(f"short start. {long_word} end.", encoder.count_tokens, Chunking(32, 4))
    assert any(long_word in c for c in chunks) and all(c.strip() for c in chunks)


@pytest.mark.parametrize(
    "chunking,window,says",
    [(Chunking(8, 0), None, "too small"), (Chunking(64, 40), None, "--overlap 40"), (Chunking(600, 0), 512, "window")],
)
def test_bad_chunking_is_named(chunking, window, says):
    assert says in " ".join(chunking.problems(window))


# --- documents ------------------------------------------------------------------------------------------------


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica (the smallest file pypdf extracts text from)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_each_kind_of_document_is_read_as_its_text(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><style>p{}</style><script>var hidden=1;</script></head>"
        "<body><h1>Warranty</h1><p>Two   years.</p><ul><li>one<li>two</ul>a<br>b</body></html>"
    )
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"id": "faq-7", "text": "Reset: hold 12 s."}) + "\n\n" + json.dumps({"text": "No id here."}) + "\n"
    )
    (tmp_path / "manual.pdf").write_bytes(minimal_pdf("Battery lasts 14 hours"))
    files = documents.find_files([tmp_path])
    assert [f.name for f in files] == ["manual.pdf", "page.html", "rows.jsonl"]
    read = {d.source: d.text for f in files for d in documents.read(f)}
    assert read["page.html"] == "Warranty\n\nTwo years.\n\none\n\ntwo\n\na\n\nb"
    assert read["faq-7"] == "Reset: hold 12 s." and read["rows.jsonl:3"] == "No id here."
    assert "Battery lasts 14 hours" in read["manual.pdf"]


@pytest.mark.parametrize(
    "name,content,says",
    [
        ("empty.md", b"", "the file is empty"),
        ("blank.md", b"   \n\n", "no text in this document"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8"),
        ("table.csv", b"a,b\n", "not a document tunelab reads"),
        ("rows.jsonl", b'{"body": "x"}\n', "rows.jsonl:1: no 'text' text field"),
        ("broken.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
    ],
)
def test_a_bad_document_is_one_clear_error(tmp_path, name, content, says):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=says):
        for file in documents.find_files([tmp_path / name]):
            documents.read(file)


def test_a_document_over_the_size_limit_and_a_folder_without_documents_are_refused(tmp_path):
    (tmp_path / "big.txt").write_text("word " * 1000)
    with pytest.raises(DataError, match="over the 0.001 MB limit"):
        documents.find_files([tmp_path], max_file_mb=0.001)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no documents in this folder"):
        documents.find_files([tmp_path / "empty"])


# --- the index --------------------------------------------------------------------------------------------------


def test_each_mode_finds_the_document_with_a_rare_word(built):
    index = rag.open_index(built)
    assert index.sources == {"aero.md", "lumen.md", "policies/returns.md", "volt.txt"}
    assert index.search("LK-4821 model number", k=1, mode="lexical")[0].source == "aero.md"
    assert index.search("returns within 45 days", k=1, mode="hybrid")[0].source == "policies/returns.md"
    dense = index.search("anything at all", k=3, mode="dense")
    assert len(dense) == 3 and dense[0].score >= dense[1].score >= dense[2].score


def test_lexical_search_returns_no_chunk_that_shares_no_word_with_the_query(built):
    assert rag.open_index(built).search("zebra xylophone", k=3, mode="lexical") == []


def test_rank_fusion_rewards_agreement_between_rankings():
    dense, lexical = [(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 9.0), (4, 8.0), (1, 1.0)]
    fused = [item for item, _ in fuse([dense, lexical])]
    assert fused[:2] == [1, 3]  # in both lists near the top
    assert set(fused) == {1, 2, 3, 4}
    assert fuse([dense, lexical])[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_building_again_re_embeds_only_changed_files_and_drops_removed_ones(built, tmp_path, tiny_encoder_dir):
    from safetensors.numpy import load_file

    before = load_file(str(built / "vectors.safetensors"))["vectors"]
    rows_before = (built / "chunks.jsonl").read_text().splitlines()
    docs = tmp_path / "docs"
    (docs / "aero.md").write_text(FACTS["aero.md"] + "\n\nThe Aero fan weighs 820 grams.")
    (docs / "volt.txt").unlink()
    (docs / "new.md").write_text("The Mira lock opens with a six digit code.")
    report = rag.build([docs], built, settings(tiny_encoder_dir))
    assert sorted(report.changed) == ["aero.md", "new.md"] and report.removed == ["volt.txt"]
    after = load_file(str(built / "vectors.safetensors"))["vectors"]
    rows_after = (built / "chunks.jsonl").read_text().splitlines()
    for i, row in enumerate(rows_before):  # unchanged files: the very same rows and vectors
        if json.loads(row)["file"] in ("lumen.md", "policies/returns.md"):
            j = rows_after.index(row)
            assert (after[j] == before[i]).all()
    assert report.embedded == sum(json.loads(r)["file"] in ("aero.md", "new.md") for r in rows_after)
    manifest = rag.read_manifest(built)
    assert set(manifest["files"]) == {"aero.md", "lumen.md", "new.md", "policies/returns.md"}
    unchanged = rag.build([docs], built, settings(tiny_encoder_dir))
    assert unchanged.changed == [] and unchanged.embedded == 0
    other_chunking = rag.build([docs], built, settings(tiny_encoder_dir, size=48))
    assert other_chunking.embedded == other_chunking.chunks  # chunks differ: every file is embedded again


def test_a_crash_mid_index_leaves_the_old_index_as_it_was(built, tmp_path, tiny_encoder_dir, monkeypatch):
    before = {p.name: p.read_bytes() for p in built.iterdir()}
    (tmp_path / "docs" / "aero.md").write_text("Changed: the Aero fan now runs for 16 hours.")
    stale = tmp_path / ".index.tmp-999999999"  # a build killed earlier (no such process): swept by the next one
    stale.mkdir()
    (stale / "chunks.jsonl").write_text("half")

    def crash(path, data):  # the new folder is fully written but for its manifest, which goes last
        assert (path.parent / "vectors.safetensors").is_file()
        raise RuntimeError("killed before the manifest")

    monkeypatch.setattr("tunelab.artifacts.write_json", crash)
    with pytest.raises(RuntimeError, match="killed"):
        rag.build([tmp_path / "docs"], built, settings(tiny_encoder_dir))
    assert {p.name: p.read_bytes() for p in built.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "index"]  # no half-written folder left


def test_an_index_whose_files_disagree_or_whose_encoder_changed_is_refused(built, tmp_path, tiny_encoder_dir):
    import shutil

    rows = (built / "chunks.jsonl").read_text().splitlines()
    (built / "chunks.jsonl").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ConfigError, match=f"{len(rows) - 1} chunks, {len(rows)} vectors"):
        rag.open_index(built)
    (built / "index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="index.json: not readable"):
        rag.open_index(built)
    retrained = shutil.copytree(tiny_encoder_dir, tmp_path / "encoder")
    rag.build([tmp_path / "docs"], tmp_path / "index2", settings(retrained))
    build_tiny_bert_weights(retrained, seed=1)  # trained again in place, same name
    with pytest.raises(ConfigError, match="has changed since the index was built"):
        rag.open_index(tmp_path / "index2")
    report = rag.build([tmp_path / "docs"], tmp_path / "index2", settings(retrained))
    assert report.embedded == report.chunks  # other weights: nothing kept


def build_tiny_bert_weights(folder: Path, seed: int) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig.from_pretrained(folder)).save_pretrained(folder)


def test_two_documents_under_one_name_are_refused(tmp_path, tiny_encoder_dir):
    (tmp_path / "docs").mkdir()
    rows = [{"id": "faq", "text": "one"}, {"id": "faq", "text": "two"}]
    (tmp_path / "docs" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="a second document named 'faq'"):
        rag.build([tmp_path / "docs"], tmp_path / "index", settings(tiny_encoder_dir))


def test_an_index_refuses_a_query_with_another_encoder(built):
    with pytest.raises(ConfigError, match="built with the encoder .* not 'all-minilm-l6-v2'"):
        rag.open_index(built, encoder="all-minilm-l6-v2")


def test_an_encoder_that_does_not_exist_or_is_not_an_encoder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_docs(tmp_path / "docs")
    with pytest.raises(ModelNotAvailableError, match="--encoder 'nobody/no-such-encoder'"):
        rag.build([tmp_path / "docs"], tmp_path / "i", rag.IndexSettings(encoder="nobody/no-such-encoder"))
    with pytest.raises(ConfigError, match="not a sentence encoder"):
        rag.build([tmp_path / "docs"], tmp_path / "i", rag.IndexSettings(encoder="smollm2-135m-instruct"))
    assert not (tmp_path / "i").exists()


def test_a_folder_that_is_not_an_index_is_never_replaced(tmp_path, tiny_encoder_dir):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a tunelab index"):
        rag.build([docs], tmp_path / "mine", settings(tiny_encoder_dir))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="no index.json"):
        rag.open_index(tmp_path / "mine")


def test_the_real_encoder_finds_a_paraphrase_that_shares_no_word(tmp_path):
    docs = write_docs(tmp_path / "docs")
    rag.build([docs], tmp_path / "index", rag.IndexSettings(device="cpu"))
    index = rag.open_index(tmp_path / "index")
    assert index.search("bring back a purchase for a refund", k=1, mode="dense")[0].source == "policies/returns.md"
    assert index.search("bring back a purchase for a refund", k=1, mode="lexical") == []


def test_the_index_command_says_what_it_did(tmp_path, tiny_encoder_dir):
    docs = write_docs(tmp_path / "docs")
    args = ["index", str(docs), "--output", str(tmp_path / "idx"), "--encoder", str(tiny_encoder_dir)]
    first = run_cli(args + ["--chunk-tokens", "64", "--overlap", "8"])
    assert first.exit_code == 0, first.output
    assert "indexed 4 files" in first.output and "4 read and embedded, 0 unchanged" in first.output
    again = run_cli(args + ["--chunk-tokens", "64", "--overlap", "8"])
    assert again.exit_code == 0 and "0 read and embedded, 4 unchanged" in again.output
    default = run_cli(args)  # default chunking: as many tokens as the encoder reads
    assert default.exit_code == 0 and "4 read and embedded" in default.output
    window = load_encoder(str(tiny_encoder_dir)).window
    assert rag.read_manifest(tmp_path / "idx")["chunking"] == {"size": window, "overlap": 32} and window == 510


def test_a_server_store_gets_a_new_collection_per_build_and_loses_the_old_one_after(
    tmp_path, tiny_encoder_dir, monkeypatch
):
    """--store URL through the same client API, the server played by qdrant-client's in-memory mode: a rebuild
    writes a new collection, the manifest names it, searches go there, and the old collection is dropped."""
    import qdrant_client

    real = qdrant_client.QdrantClient
    server = real(":memory:")
    monkeypatch.setattr(qdrant_client, "QdrantClient", lambda *a, **kw: server if kw.get("url") else real(*a, **kw))
    docs = write_docs(tmp_path / "docs")
    remote = rag.IndexSettings(encoder=str(tiny_encoder_dir), chunking=Chunking(64, 8), store_url="http://qdrant:6333")
    rag.build([docs], tmp_path / "index", remote)
    first = rag.read_manifest(tmp_path / "index")["store"]
    assert first["kind"] == "server" and [c.name for c in server.get_collections().collections] == [
        first["collection"]
    ]
    (docs / "aero.md").write_text("The Aero fan weighs 820 grams.")
    rag.build([docs], tmp_path / "index", remote)
    second = rag.read_manifest(tmp_path / "index")["store"]
    assert [c.name for c in server.get_collections().collections] == [second["collection"]] != [first["collection"]]
    index = rag.open_index(tmp_path / "index")
    assert index.store.client is server
    assert index.search("weighs 820 grams", k=1)[0].source == "aero.md"


def test_a_server_that_does_not_answer_is_one_line(tmp_path, tiny_encoder_dir):
    docs = write_docs(tmp_path / "docs")
    remote = rag.IndexSettings(encoder=str(tiny_encoder_dir), store_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="the Qdrant server does not answer"):
        rag.build([docs], tmp_path / "index", remote)
    assert not (tmp_path / "index").exists()


def test_another_text_field_reads_every_jsonl_document_again(tmp_path, tiny_encoder_dir):
    rows = [{"id": "a", "text": "first text", "body": "the body of a"}, {"id": "b", "text": "second", "body": "b"}]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rag.build([tmp_path / "docs"], tmp_path / "index", settings(tiny_encoder_dir))
    other = rag.IndexSettings(str(tiny_encoder_dir), Chunking(64, 8), text_field="body", device="cpu")
    report = rag.build([tmp_path / "docs"], tmp_path / "index", other)
    assert report.changed == ["rows.jsonl"]
    texts = [json.loads(line)["text"] for line in (tmp_path / "index" / "chunks.jsonl").read_text().splitlines()]
    assert texts == ["the body of a", "b"]


def test_eval_retrieval_names_a_mode_that_does_not_exist(built, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "q", "source": "aero.md"}) + "\n")
    result = run_cli(["eval-retrieval", str(built), "--data", str(qa), "--mode", "semantic"])
    assert result.exit_code == 2 and "--mode semantic: use one of hybrid, dense, lexical" in result.output
