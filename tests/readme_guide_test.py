"""README is a user guide: short, with a table of contents whose links and files exist; the results live in
benchmarks/README.md, where benchmarks/report.py writes them."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]*)(#[^)\s]*)?\)")


def _anchor(heading):
  """GitHub's anchor of a markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
  return {_anchor(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_readme_is_a_short_guide_with_a_table_of_contents():
  text = (ROOT / "README.md").read_text()
  assert len(text.splitlines()) <= 300, "README.md is a user guide of at most 300 lines; results go to benchmarks/"
  assert "## Contents" in text
  for heading in ("Install", "The 10-line example", "Two commands", "Prune your own Keras model",
                  "Prune your trained model", "The stages", "Known limits", "How it works"):
    assert f"## {heading}\n" in text, heading
    assert f"(#{_anchor(heading)})" in text, f"the table of contents misses {heading!r}"


def test_every_relative_link_of_the_docs_points_at_a_file_and_heading_that_exist():
  docs = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
  assert len(docs) >= 6
  for doc in docs:
    for target, anchor in LINK.findall(doc.read_text()):
      if target.startswith("http"):
        continue
      path = (doc.parent / target).resolve() if target else doc
      assert path.exists(), f"{doc.relative_to(ROOT)} links to {target!r}, which does not exist"
      if anchor and path.suffix == ".md":
        assert anchor[1:] in _anchors(path), f"{doc.relative_to(ROOT)} links to {target}{anchor}: no such heading"


def test_report_markers_sit_where_report_py_writes():
  bench = (ROOT / "benchmarks" / "README.md").read_text()
  for name in ("benchmarks", "fashion_quality", "fashion_quality_mobilenet_v2_demo", "fashion_ablation",
               "pretrained"):
    assert f"<!-- {name}:start -->" in bench and f"<!-- {name}:end -->" in bench, name
  readme = (ROOT / "README.md").read_text()
  assert "<!-- pretrained_summary:start -->" in readme and "<!-- pretrained_summary:end -->" in readme
  assert "<!-- benchmarks:start -->" not in readme, "results tables belong in benchmarks/README.md"
