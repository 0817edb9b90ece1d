--- draftls for Neovim: inline ghost-text completion (Neovim 0.12+) from the draftls
--- language server, with a completion-menu fallback on older versions.
---
--- require("draftls").setup({
---   cmd = { "draftls", "serve" },
---   settings = { drafts = 3, mode = "auto" },
---   keys = { accept = "<M-l>", next = "<M-]>", prev = "<M-[>", trigger = "<M-\\>" },
--- })
local M = {}

local NAME = "draftls"

--- Defaults; `setup(opts)` deep-merges opts over a copy of these.
M.defaults = {
  --- The server command (a list: program and arguments).
  cmd = { "draftls", "serve" },
  filetypes = { "python" },
  --- Files or folders that mark the workspace root (searched upwards from the file).
  root_markers = { "pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", ".git" },
  --- Server settings, flat camelCase (see :help draftls-settings). Sent as
  --- initializationOptions and as the `draftls` section of workspace/configuration.
  settings = {},
  --- Insert-mode keys for inline completion (Neovim 0.12+); `false` disables a key.
  keys = {
    accept = "<M-l>", -- accept the shown draft
    next = "<M-]>", -- show the next draft
    prev = "<M-[>", -- show the previous draft
    trigger = "<M-\\>", -- ask for drafts now (after a dismissal, say)
  },
  --- Ghost text when the running Neovim has vim.lsp.inline_completion; false = menu only.
  inline = true,
  --- On Neovims without inline completion: trigger the completion menu as you type (0.11+).
  autotrigger = true,
  --- Extra fields merged into the vim.lsp.config() / vim.lsp.start() table (on_attach, capabilities, ...).
  lsp = {},
}

M.config = vim.deepcopy(M.defaults)

local function has_config_api()
  return vim.lsp.config ~= nil and vim.lsp.enable ~= nil and vim.fn.has("nvim-0.11") == 1
end

--- True when this Neovim has LSP inline completion (0.12+).
function M.has_inline()
  local ok, ic = pcall(function()
    return vim.lsp.inline_completion
  end)
  return ok and type(ic) == "table" and type(ic.enable) == "function" and type(ic.get) == "function"
end

--- The running draftls clients (optionally only those attached to `bufnr`).
---@param bufnr? integer
---@return vim.lsp.Client[]
function M.clients(bufnr)
  local filter = { name = NAME, bufnr = bufnr }
  if vim.lsp.get_clients then
    return vim.lsp.get_clients(filter)
  end
  return vim.lsp.get_active_clients(filter) -- Neovim < 0.10
end

--- Calls `client:request(...)` (0.11+) or `client.request(...)` (older).
local function request(client, method, params, handler, bufnr)
  if vim.fn.has("nvim-0.11") == 1 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

--- Asks the server for `draftls.status`; calls `callback(status, err, client)` for each client
--- (`status` is nil and `err` says why when there is no client or the request fails).
---@param callback fun(status: table?, err: any, client: vim.lsp.Client?)
---@param bufnr? integer
function M.status(callback, bufnr)
  local clients = M.clients(bufnr)
  if #clients == 0 then
    clients = M.clients()
  end
  if #clients == 0 then
    callback(nil, "draftls is not running (open a " .. table.concat(M.config.filetypes, "/") .. " file)", nil)
    return
  end
  for _, client in ipairs(clients) do
    request(client, "workspace/executeCommand", { command = "draftls.status", arguments = {} }, function(err, result)
      callback(result, err, client)
    end, bufnr or 0)
  end
end

--- One line for a status table.
---@param s table
---@return string
function M.format_status(s)
  local parts = { ("draftls: %s"):format(tostring(s.state)) }
  if s.model then
    local backend = s.backend
    -- The weights where they are not float32 ("onnx int8"): `quantize: auto` picks them per CPU.
    if type(backend) == "string" and type(s.quantize) == "string" and s.quantize ~= "none" then
      backend = backend .. " " .. s.quantize
    end
    local where = table.concat(vim.tbl_filter(function(x)
      return x ~= nil and x ~= vim.NIL
    end, { backend, s.device }), "/")
    table.insert(parts, ("model %s%s"):format(s.model, where ~= "" and (" (" .. where .. ")") or ""))
  end
  if s.error and s.error ~= vim.NIL and s.error ~= "" then
    table.insert(parts, "error: " .. tostring(s.error))
  end
  if s.requests then
    table.insert(parts, ("requests %s, shown %s, accepted %s"):format(s.requests, s.shown or 0, s.accepted or 0))
  end
  if type(s.acceptance) == "number" then
    table.insert(parts, ("acceptance %.0f%%"):format(100 * s.acceptance))
  end
  local lat = s.latency_ms
  if type(lat) == "table" and type(lat.p50) == "number" then
    table.insert(parts, ("latency p50 %.0f ms, p90 %.0f ms"):format(lat.p50, tonumber(lat.p90) or 0))
  end
  return table.concat(parts, ", ")
end

--- :DraftlsStatus; with a bang (:DraftlsStatus!) it prints the whole status table.
local function status_command(args)
  M.status(function(s, err)
    vim.schedule(function()
      if not s then
        vim.notify("draftls: " .. (type(err) == "table" and (err.message or vim.inspect(err)) or tostring(err)),
          vim.log.levels.WARN)
      elseif args.bang then
        vim.notify(vim.inspect(s), vim.log.levels.INFO)
      else
        vim.notify(M.format_status(s), vim.log.levels.INFO)
      end
    end)
  end)
end

--- Changes server settings at run time: merges `settings` into the configured ones and
--- sends workspace/didChangeConfiguration to every running draftls client.
---@param settings table flat camelCase settings, e.g. { drafts = 5, decoder = "sampling" }
function M.set(settings)
  M.config.settings = vim.tbl_deep_extend("force", M.config.settings or {}, settings or {})
  for _, client in ipairs(M.clients()) do
    client.settings = vim.tbl_deep_extend("force", client.settings or {}, { draftls = M.config.settings })
    local params = { settings = { draftls = M.config.settings } }
    if vim.fn.has("nvim-0.11") == 1 then
      client:notify("workspace/didChangeConfiguration", params)
    else
      client.notify("workspace/didChangeConfiguration", params)
    end
  end
end

--- Asks for inline drafts at the cursor now (insert mode; Neovim 0.12+).
---@param bufnr? integer
function M.trigger(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  -- Neovim requests inline completions on CursorMovedI (debounced); run just its handler.
  pcall(vim.api.nvim_exec_autocmds, "CursorMovedI", {
    group = ("nvim.lsp.inline_completion:%d"):format(bufnr),
    buffer = bufnr,
    modeline = false,
  })
end

--- Accepts the shown inline draft; returns false when there is none.
---@return boolean
function M.accept()
  return M.has_inline() and vim.lsp.inline_completion.get() or false
end

--- Shows the next (count > 0) or previous (count < 0) draft.
---@param count integer
function M.cycle(count)
  if M.has_inline() then
    vim.lsp.inline_completion.select({ count = count })
  end
end

local function set_keys(bufnr)
  local keys = M.config.keys or {}
  local function map(lhs, rhs, desc, expr)
    if lhs and lhs ~= "" then
      vim.keymap.set("i", lhs, rhs, { buffer = bufnr, expr = expr, silent = true, desc = desc })
    end
  end
  map(keys.accept, function()
    if not M.accept() then
      -- Nothing to accept: the key does what it does without draftls.
      return keys.accept
    end
    return ""
  end, "draftls: accept the inline draft", true)
  map(keys.next, function()
    M.cycle(1)
  end, "draftls: next draft")
  map(keys.prev, function()
    M.cycle(-1)
  end, "draftls: previous draft")
  map(keys.trigger, function()
    M.trigger(bufnr)
  end, "draftls: ask for drafts now")
end

--- Neovim's LSP completion inserts a plain-text item only up to its first blank
--- ("join(os.getcwd()," of "join(os.getcwd(), 'data')"). After a draftls item is accepted
--- from the menu, insert the rest of its text.
local function complete_rest_of_draft(bufnr)
  local ok, err = pcall(function()
    local event = vim.v.event or {}
    if event.reason ~= nil and event.reason ~= "accept" then
      return
    end
    local done = vim.v.completed_item
    local lsp_data = type(done) == "table" and vim.tbl_get(done, "user_data", "nvim", "lsp") or nil
    if type(lsp_data) ~= "table" then
      return
    end
    local client = lsp_data.client_id and vim.lsp.get_client_by_id(lsp_data.client_id)
    local item = lsp_data.completion_item
    if not client or client.name ~= NAME or type(item) ~= "table" then
      return
    end
    if item.insertTextFormat == 2 then -- a snippet: Neovim expands the whole text itself
      return
    end
    local text = type(item.textEdit) == "table" and item.textEdit.newText or item.insertText
    local word = done.word or ""
    if type(text) ~= "string" or #text <= #word or text:sub(1, #word) ~= word then
      return
    end
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1]
    if line:sub(col - #word + 1, col) ~= word then
      return -- the word is not right before the cursor: something else changed the line
    end
    local rest = vim.split(text:sub(#word + 1), "\n", { plain = true })
    vim.api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col, rest)
    local last = rest[#rest]
    vim.api.nvim_win_set_cursor(0, { row + #rest - 1, (#rest == 1 and col or 0) + #last })
  end)
  if not ok then
    vim.notify_once("draftls: " .. tostring(err), vim.log.levels.DEBUG)
  end
end

--- LspAttach for a draftls client: turn on ghost text (0.12+) or the completion menu.
local function on_attach(client, bufnr)
  if M.config.inline and M.has_inline() and client:supports_method("textDocument/inlineCompletion") then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    set_keys(bufnr)
  else
    if vim.lsp.completion and vim.lsp.completion.enable then
      vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = M.config.autotrigger })
    else
      vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
    end
    vim.api.nvim_create_autocmd("CompleteDone", {
      group = vim.api.nvim_create_augroup("draftls.menu." .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = function()
        complete_rest_of_draft(bufnr)
      end,
    })
  end
end

--- While the model loads the server answers with nothing; ask again when its progress ends.
local function on_progress(args)
  local data = args.data or {}
  local client = data.client_id and vim.lsp.get_client_by_id(data.client_id)
  if not client or client.name ~= NAME then
    return
  end
  local value = data.params and data.params.value or {}
  if value.kind ~= "end" then
    return
  end
  vim.schedule(function()
    local bufnr = vim.api.nvim_get_current_buf()
    if vim.api.nvim_get_mode().mode:sub(1, 1) == "i" and client.attached_buffers[bufnr] then
      M.trigger(bufnr)
    end
  end)
end

local function lsp_table()
  local c = M.config
  return vim.tbl_deep_extend("force", {
    cmd = c.cmd,
    filetypes = c.filetypes,
    root_markers = c.root_markers,
    init_options = vim.deepcopy(c.settings),
    settings = { draftls = vim.deepcopy(c.settings) },
  }, c.lsp or {})
end

--- Neovim < 0.11: vim.lsp.start() from a FileType autocmd.
local function start_legacy(group)
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.config.filetypes,
    callback = function(args)
      if vim.bo[args.buf].buftype ~= "" then
        return
      end
      local cfg = lsp_table()
      local fname = vim.api.nvim_buf_get_name(args.buf)
      local root
      if vim.fs.root then
        root = vim.fs.root(args.buf, cfg.root_markers)
      else
        local found = vim.fs.find(cfg.root_markers, { upward = true, path = vim.fs.dirname(fname) })[1]
        root = found and vim.fs.dirname(found)
      end
      cfg.name = NAME
      cfg.root_dir = root or vim.fs.dirname(fname) or vim.fn.getcwd()
      cfg.root_markers, cfg.filetypes = nil, nil
      vim.lsp.start(cfg, { bufnr = args.buf })
    end,
  })
end

--- Sets draftls up. Call once, from your init.lua.
---@param opts? table see M.defaults
function M.setup(opts)
  opts = opts or {}
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace, they do not merge by index.
  for _, k in ipairs({ "cmd", "filetypes", "root_markers" }) do
    if opts[k] then
      M.config[k] = opts[k]
    end
  end

  local group = vim.api.nvim_create_augroup("draftls", { clear = true })
  vim.api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == NAME then
        on_attach(client, args.buf)
      end
    end,
  })
  if vim.fn.exists("##LspProgress") == 1 then
    vim.api.nvim_create_autocmd("LspProgress", { group = group, callback = on_progress })
  end

  vim.api.nvim_create_user_command("DraftlsStatus", status_command, {
    bang = true,
    desc = "draftls: show the server's state, model and acceptance (! for everything)",
  })

  if has_config_api() then
    vim.lsp.config(NAME, lsp_table())
    vim.lsp.enable(NAME)
  else
    start_legacy(group)
  end
end

return M
