"""Plain-text tables for kslim's printed reports."""

__all__ = ["format_table"]


def format_table(header, rows, left_columns=1):
  """Aligns `rows` (lists of strings) under `header` between rules.

  The first `left_columns` columns are left-aligned (names), the rest right-aligned (numbers).
  """
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

  def line(cells):
    return "  ".join(c.ljust(w) if i < left_columns else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))

  rule = "-" * len(line(header))
  return "\n".join([rule, line(header), rule] + [line(r) for r in rows] + [rule])
