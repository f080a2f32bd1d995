"""Programs: `dspy.Module`s composed from medprog signatures, registered by name."""

from medprog.programs.registry import ProgramInfo, UnknownProgramError, available, get_program

__all__ = ["ProgramInfo", "UnknownProgramError", "available", "get_program"]
