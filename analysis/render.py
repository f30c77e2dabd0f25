"""A table's text: Markdown (`DataFrame.to_markdown`, tabulate's pipe format), LaTeX (the paper's
notation: β₁, β₂, γ, L_AT, ±) and CSV, written side by side by `write_table`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def to_markdown(df: pd.DataFrame) -> str:
    """A pipe table, columns padded to their widest cell; cells are shown as they are (no number parsing)."""
    return df.to_markdown(index=False, disable_numparse=True) + "\n"


_LATEX = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "±": r"$\pm$",
          "−": r"$-$", "–": "--"}


def _latex_escape(text: str) -> str:
    """LaTeX specials escaped; beta1, beta2, gamma, L_AT, ± and the dashes in the paper's notation."""
    text = "".join(_LATEX.get(ch, ch) for ch in str(text))
    return (text.replace("beta1", r"$\beta_1$").replace("beta2", r"$\beta_2$")
            .replace("gamma", r"$\gamma$").replace("L\\_AT", r"$\mathcal{L}_{AT}$"))


def to_latex(df: pd.DataFrame, caption: str) -> str:
    """A `table` float: `\\hline` rules, caption below the table (ACL style). Not `DataFrame.to_latex`:
    its cells would still need `_latex_escape` (it knows no beta1/gamma/L_AT/±), and it moves the
    caption above the table and needs booktabs."""
    spec = "l" + "c" * (len(df.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\hline",
             " & ".join(_latex_escape(c) for c in df.columns) + r" \\", r"\hline"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, name: str, out_dir: Path, caption: str) -> list[Path]:
    """`<out_dir>/<name>.md|.tex|.csv`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.tex", out_dir / f"{name}.csv"]
    paths[0].write_text(f"{caption}\n\n{to_markdown(df)}")
    paths[1].write_text(to_latex(df, caption))
    df.to_csv(paths[2], index=False)
    return paths
