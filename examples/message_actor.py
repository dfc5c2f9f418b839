"""Seed actor example 2: tasks holding an actor handle send it messages
while the driver polls it, once a second. Runs about 10 s: 10 rounds (the
original ran 100, about 100 s); set SHOAL_EXAMPLE_ROUNDS to choose."""

import os
import time

import shoal as ray

ROUNDS = int(os.environ.get("SHOAL_EXAMPLE_ROUNDS", "10"))

ray.init()


@ray.remote
class MessageActor(object):
    def __init__(self):
        self.messages = []

    def add_message(self, message):
        self.messages.append(message)

    def get_and_clear_messages(self):
        messages = self.messages
        self.messages = []
        return messages


@ray.remote
def worker(message_actor, j):
    for i in range(ROUNDS):
        time.sleep(1)
        message_actor.add_message.remote("Message {} from actor {}.".format(i, j))


message_actor = MessageActor.remote()
[worker.remote(message_actor, j) for j in range(3)]
print(f"3 tasks (as many at a time as there are CPUs) send a message a second for {ROUNDS} s; "
      f"the driver polls every second", flush=True)
for i in range(ROUNDS):
    new_messages = ray.get(message_actor.get_and_clear_messages.remote())
    # flush: progress shows at once even when the output is a pipe or a file
    print(f"round {i + 1}/{ROUNDS}, new messages:", new_messages, flush=True)
    time.sleep(1)
