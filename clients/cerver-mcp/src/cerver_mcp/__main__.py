from cerver_mcp.cli import main

main()
