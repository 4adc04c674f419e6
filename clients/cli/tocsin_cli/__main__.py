from tocsin_cli.main import main

main()
