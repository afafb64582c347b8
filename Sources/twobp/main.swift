print("twobp")
