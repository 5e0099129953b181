"""servicelab's model server, run as `python <this folder>` (see __main__.py). Its modules
import each other as top-level modules (the folder is the script's path); the lab imports
`detect` and `tensors`, which use the standard library only."""
