# From the cerver 0.1.0 README, "Quick Start", unmodified.
from cerver import Sandbox

# Set your API key
# export CERVER_API_KEY=sk_live_...

with Sandbox() as sandbox:
    result = sandbox.run("print('Hello from sandbox!')")
    print(result.output)  # Hello from sandbox!
