# The SDK's `install(package)`, then importing the package in the same sandbox.
from cerver import Sandbox

with Sandbox() as sandbox:
    ok = sandbox.install("six==1.16.0")
    print(ok)
    result = sandbox.run("import six; print(six.__version__)")
    print(result.output)
