"""`Choice`: the string enums kslim uses for options, with one clear parsing error."""

import enum

__all__ = ["Choice"]


class Choice(str, enum.Enum):
  """A string option; `parse` turns a value into a member or names the allowed ones."""

  @classmethod
  def parse(cls, value, what):
    """`value` as a member; a clear ValueError names the bad value and the allowed ones.

    Example:
      >>> Mode.parse("int4", "conversion mode")
      ValueError: unknown conversion mode 'int4'; choose one of ['float32', ...]
    """
    try:
      return cls(value)
    except ValueError:
      raise ValueError(f"unknown {what} {value!r}; choose one of "
                       f"{[m.value for m in cls]}") from None
