//! Several nodes in one process on a memory hub: the engine, the state and
//! real presence cores together.
