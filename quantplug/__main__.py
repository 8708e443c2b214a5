from quantplug.cli import main

main()
