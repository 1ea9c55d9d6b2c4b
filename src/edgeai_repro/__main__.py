from edgeai_repro.cli import main

main()
