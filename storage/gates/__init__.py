"""`GateModel` implementations: in-process torch (`local`) and a `memsvc gates serve` worker (`remote`)."""
