-- Headless Neovim driver for tests/editors/test_nvim.py.
--
-- Run as `nvim --headless --clean -u tests/editors/nvim_driver.lua`, with DRAFTLS_TEST_CONFIG
-- naming a JSON file: {plugin, cmd, settings, file, line, out, cycle, timeout_ms}.
-- It sets the plugin up, opens `file`, waits for the server to be ready, goes to insert mode
-- at the end of line `line` (1-based), waits for inline ghost text, cycles through the
-- drafts, accepts one and asks :DraftlsStatus. Everything it sees goes to `out` as JSON.
-- The steps run in a coroutine resumed by timers, so that Neovim's main loop runs between
-- them (insert mode, keys, LSP messages) just as it does for a user.

local cfg = vim.json.decode(table.concat(vim.fn.readfile(vim.env.DRAFTLS_TEST_CONFIG), "\n"))
local result = { steps = {}, messages = {}, nvim = tostring(vim.version()) }
local uv = vim.uv or vim.loop

local function note(step)
  table.insert(result.steps, ("%6d ms  %s"):format(uv.now() - result.t0, step))
end

local function finish()
  result.log = vim.lsp.log.get_filename()
  local ok, text = pcall(vim.json.encode, result)
  if not ok then
    text = vim.json.encode({ error = "cannot encode the result: " .. tostring(text), steps = result.steps })
  end
  vim.fn.writefile({ text }, cfg.out)
  vim.cmd("qall!")
end

vim.opt.runtimepath:prepend(cfg.plugin)
vim.opt.swapfile = false
vim.opt.shortmess:append("I")
vim.lsp.log.set_level(vim.log.levels.DEBUG)

-- Everything the plugin notifies (that is where :DraftlsStatus prints).
local notify = vim.notify
vim.notify = function(msg, level, opts)
  table.insert(result.messages, tostring(msg))
  return notify(msg, level, opts)
end

local draftls = require("draftls")
draftls.setup({ cmd = cfg.cmd, settings = cfg.settings, inline = not cfg.menu })

local function sleep(ms)
  local co = coroutine.running()
  vim.defer_fn(function()
    local ok, err = coroutine.resume(co)
    if not ok then
      result.error = debug.traceback(co, tostring(err))
      finish()
    end
  end, ms)
  coroutine.yield()
end

local function wait_for(cond, timeout_ms, interval_ms)
  local t0 = uv.now()
  while true do
    local ok, v = pcall(cond)
    if ok and v then
      return v
    end
    if uv.now() - t0 > timeout_ms then
      return nil
    end
    sleep(interval_ms or 50)
  end
end

local function feed(keys)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "m", false)
end

local NS = vim.api.nvim_create_namespace("nvim.lsp.inline_completion")

--- The ghost text on screen: the virt_text and virt_lines of Neovim's inline-completion extmarks.
local function ghost(bufnr)
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, NS, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local lines = {}
  for _, m in ipairs(marks) do
    local d = m[4]
    local first = {}
    for _, chunk in ipairs(d.virt_text or {}) do
      table.insert(first, chunk[1])
    end
    table.insert(lines, table.concat(first))
    for _, vl in ipairs(d.virt_lines or {}) do
      local l = {}
      for _, chunk in ipairs(vl) do
        table.insert(l, chunk[1])
      end
      table.insert(lines, table.concat(l))
    end
  end
  return table.concat(lines, "\n")
end

--- Neovim's own inline-completion state (private; read for the test only, nil if it moves).
local function completor(bufnr)
  local ok, c = pcall(function()
    return vim.lsp._capability.all.inline_completion.active[bufnr]
  end)
  return ok and c or nil
end

local function current_item(bufnr)
  local c = completor(bufnr)
  local cur = c and c.current
  if not cur then
    return nil
  end
  local text = cur.insert_text
  return type(text) == "table" and text.value or text
end

local function all_items(bufnr)
  local c = completor(bufnr)
  if not c then
    return nil
  end
  local out = {}
  for _, st in pairs(c.client_state or {}) do
    for _, item in ipairs(st.items or {}) do
      local text = item.insertText
      table.insert(out, {
        insertText = type(text) == "table" and text.value or text,
        range = item.range,
        command = item.command,
      })
    end
  end
  return out
end

local function get_status(timeout_ms)
  local got
  draftls.status(function(s, err)
    got = { status = s, err = err }
    if err then
      result.status_errors = result.status_errors or {}
      table.insert(result.status_errors, type(err) == "table" and (err.message or vim.inspect(err)) or tostring(err))
    end
  end)
  wait_for(function()
    return got
  end, timeout_ms or 10000)
  return got and got.status, got and got.err
end

local function final_status()
  -- :DraftlsStatus, and the raw status once the acceptance has been counted.
  vim.cmd("DraftlsStatus")
  wait_for(function()
    for _, m in ipairs(result.messages) do
      if m:match("^draftls: ") then
        return true
      end
    end
  end, 5000)
  result.status_final = wait_for(function()
    local s = get_status(5000)
    return s and (s.accepted or 0) >= 1 and s
  end, 5000, 200) or get_status(5000)
end

local function main()
  result.t0 = uv.now()
  result.has_inline = draftls.has_inline()
  vim.cmd.edit(vim.fn.fnameescape(cfg.file))
  local bufnr = vim.api.nvim_get_current_buf()
  result.filetype = vim.bo[bufnr].filetype
  note("opened " .. cfg.file .. " filetype=" .. result.filetype)

  local client = wait_for(function()
    return draftls.clients(bufnr)[1]
  end, 15000)
  if not client then
    result.error = "no draftls client attached to the buffer"
    return
  end
  note("client attached")
  wait_for(function()
    return client.initialized
  end, 30000)
  result.server_capabilities = {
    inlineCompletionProvider = client.server_capabilities.inlineCompletionProvider ~= nil,
    completionProvider = client.server_capabilities.completionProvider ~= nil,
    executeCommandProvider = client.server_capabilities.executeCommandProvider,
    positionEncoding = client.offset_encoding,
  }

  -- Insert mode at the end of the line: Neovim asks for inline completions on its own.
  -- With insert_early this happens while the model still loads (the server answers with
  -- nothing), and the plugin asks again when the server's loading progress ends.
  local function insert()
    vim.api.nvim_win_set_cursor(0, { cfg.line, 0 })
    feed("A")
    wait_for(function()
      return vim.api.nvim_get_mode().mode == "i"
    end, 2000, 10)
    note("insert mode")
  end
  if cfg.insert_early then
    insert()
    result.state_at_insert = (get_status(5000) or {}).state
    note("state at insert: " .. tostring(result.state_at_insert))
  end

  -- The model loads in the background; until then the server answers with nothing.
  local ready = wait_for(function()
    local s = get_status(5000)
    result.status_loading = result.status_loading or s
    if s then
      result.states_seen = result.states_seen or {}
      result.states_seen[tostring(s.state)] = true
    end
    -- The contract's states are loading, ready and failed; anything else counts as not yet.
    return s and (s.state == "ready" or s.state == "failed") and s
  end, cfg.timeout_ms, 250)
  result.status_ready = ready
  note("server state " .. tostring(ready and ready.state))
  if not ready or ready.state ~= "ready" then
    result.error = "the server did not become ready"
    return
  end
  if not cfg.insert_early then
    insert()
  end

  if cfg.menu then
    -- The completion-menu fallback (textDocument/completion through vim.lsp.completion).
    vim.o.completeopt = "menu,menuone,noinsert"
    sleep(100)
    if vim.lsp.completion and vim.lsp.completion.get then
      vim.lsp.completion.get()
    else
      feed("<C-x><C-o>") -- Neovim < 0.11: omnifunc
    end
    local items = wait_for(function()
      local info = vim.fn.complete_info({ "items", "pum_visible" })
      return info.pum_visible == 1 and #info.items > 0 and info.items
    end, cfg.timeout_ms, 50)
    result.menu = {}
    result.menu_text = {}
    for _, it in ipairs(items or {}) do
      table.insert(result.menu, it.word)
      local ci = type(it.user_data) == "table" and vim.tbl_get(it.user_data, "nvim", "lsp", "completion_item") or {}
      table.insert(result.menu_text, (ci.textEdit or {}).newText or ci.insertText or vim.NIL)
    end
    note("menu: " .. vim.inspect(result.menu))
    if not items then
      result.error = "no completion menu was shown"
      return
    end
    feed("<C-y>")
    wait_for(function()
      return vim.fn.pumvisible() == 0
    end, 2000, 20)
    sleep(100)
    result.line_after_accept = vim.api.nvim_buf_get_lines(bufnr, cfg.line - 1, cfg.line, true)[1]
    result.buffer_after_accept = vim.api.nvim_buf_get_lines(bufnr, 0, -1, true)
    note("after <C-y>: " .. result.line_after_accept)
    feed("<Esc>")
    sleep(50)
    final_status()
    return
  end

  local shown = wait_for(function()
    return ghost(bufnr)
  end, cfg.timeout_ms, 50)
  result.mode = vim.api.nvim_get_mode().mode
  result.cursor = vim.api.nvim_win_get_cursor(0)
  note("ghost text: " .. vim.inspect(shown))
  result.ghost = { shown }
  result.items = all_items(bufnr)
  result.current = { current_item(bufnr) }
  if not shown then
    result.error = "no ghost text was shown"
    return
  end

  -- Cycle: <M-]> (next) through every draft, then <M-[> (previous) once.
  for i = 1, (cfg.cycle or 0) do
    local before = current_item(bufnr) or ghost(bufnr)
    feed("<M-]>")
    wait_for(function()
      return (current_item(bufnr) or ghost(bufnr)) ~= before
    end, 1000, 20)
    table.insert(result.ghost, ghost(bufnr) or vim.NIL)
    table.insert(result.current, current_item(bufnr) or vim.NIL)
    note(("after <M-]> #%d: %s"):format(i, vim.inspect(ghost(bufnr))))
  end
  if (cfg.cycle or 0) > 0 then
    local before = current_item(bufnr) or ghost(bufnr)
    feed("<M-[>")
    wait_for(function()
      return (current_item(bufnr) or ghost(bufnr)) ~= before
    end, 1000, 20)
    result.after_prev = current_item(bufnr) or vim.NIL
    result.after_prev_ghost = ghost(bufnr) or vim.NIL
  end

  -- Accept with <M-l> and read the line back.
  result.accepted_item = current_item(bufnr)
  local before = vim.api.nvim_buf_get_lines(bufnr, cfg.line - 1, cfg.line, true)[1]
  feed("<M-l>")
  wait_for(function()
    return vim.api.nvim_buf_get_lines(bufnr, cfg.line - 1, cfg.line, true)[1] ~= before
  end, 3000, 20)
  result.line_after_accept = vim.api.nvim_buf_get_lines(bufnr, cfg.line - 1, cfg.line, true)[1]
  result.buffer_after_accept = vim.api.nvim_buf_get_lines(bufnr, 0, -1, true)
  result.cursor_after_accept = vim.api.nvim_win_get_cursor(0)
  note("after accept: " .. result.line_after_accept)
  feed("<Esc>")
  sleep(50)

  final_status()
  note("done")
end

vim.api.nvim_create_autocmd("VimEnter", {
  once = true,
  callback = function()
    local co = coroutine.create(function()
      local ok, err = xpcall(main, debug.traceback)
      if not ok then
        result.error = err
      end
      finish()
    end)
    vim.schedule(function()
      local ok, err = coroutine.resume(co)
      if not ok then
        result.error = tostring(err)
        finish()
      end
    end)
  end,
})

-- Never hang the test: give up after the overall budget.
vim.defer_fn(function()
  result.error = (result.error or "") .. " [driver timeout]"
  finish()
end, cfg.total_timeout_ms or 60000)
