# From the cerver 0.1.0 README, "State Persistence", unmodified.
from cerver import Sandbox

with Sandbox() as sandbox:
    sandbox.run("x = 10")
    sandbox.run("y = 20")
    result = sandbox.run("print(x + y)")
    print(result.output)  # 30
