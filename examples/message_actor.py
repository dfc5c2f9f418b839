"""Seed actor example 2: tasks holding an actor handle send it messages
while the driver polls it. Runs about 100 s as in the original example; set
SHOAL_EXAMPLE_ROUNDS to run fewer rounds."""

import os
import time

import shoal as ray

ROUNDS = int(os.environ.get("SHOAL_EXAMPLE_ROUNDS", "100"))

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
for _ in range(ROUNDS):
    new_messages = ray.get(message_actor.get_and_clear_messages.remote())
    print("New messages:", new_messages)
    time.sleep(1)
