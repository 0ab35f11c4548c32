from kalshictl.cli.app import main

main()
