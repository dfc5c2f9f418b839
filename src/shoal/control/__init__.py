"""Seeing inside a running runtime from outside it.

Each runtime answers read-only questions on a Unix socket in a folder of
its user's (mode 0700; config.runtime_dir()), named <driver pid>-<session>.sock:

    shoal CLI / dashboard --JSON line--> ControlServer thread --> answers.answer(rt, question)
                          <--JSON line--                          (a snapshot under the
                                                                   scheduler's lock, sent after)

The server's thread sleeps in accept() while nobody asks: the task path
never sees it.

    endpoint.py   the socket, its folder, finding runtimes, asking them
    answers.py    the questions: status, tasks, actors, workers, objects, memory, timeline...
    trace.py      task events as Chrome trace events (timeline)
    procstat.py   CPU and memory of processes, from /proc
    stacks.py     Python stacks of the driver and every worker
"""
