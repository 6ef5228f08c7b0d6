-- luacheck settings for `make lint`: Lua 5.4 everywhere, busted's
-- globals in the specs.
std = "lua54"
max_line_length = 120

files["spec/"] = { std = "+busted" }
