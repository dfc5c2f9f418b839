"""Seed actor example 1: a counter whose state lives in an actor process."""

import shoal as ray

ray.init()


@ray.remote
class Counter(object):
    def __init__(self):
        self.x = 0

    def inc(self):
        self.x += 1

    def get_value(self):
        return self.x


c = Counter.remote()
print(ray.get(c.get_value.remote()))  # 0
c.inc.remote()
c.inc.remote()
print(ray.get(c.get_value.remote()))  # 2
