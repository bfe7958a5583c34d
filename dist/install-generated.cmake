# Runs at install time (cmake/install.cmake), when CMAKE_INSTALL_PREFIX is
# the prefix given to 'cmake --install': writes the files that name installed
# paths and installs them, with the completion for zsh, whose directory
# depends on the prefix. file(INSTALL) honours DESTDIR and records each file
# in the install manifest.

set(prefix "${CMAKE_INSTALL_PREFIX}")
foreach(rel BINDIR LIBEXECDIR DATADIR)
  if(IS_ABSOLUTE "${YARD_${rel}_REL}")
    set(YARD_${rel} "${YARD_${rel}_REL}")
  else()
    set(YARD_${rel} "${prefix}/${YARD_${rel}_REL}")
  endif()
endforeach()

set(unit_dir "${YARD_SYSTEMD_UNIT_DIR}")
if(NOT unit_dir)
  set(unit_dir "${prefix}/lib/systemd/system")
endif()
set(zsh_dir "${YARD_ZSH_COMPLETION_DIR}")
if(NOT zsh_dir)
  # Debian's zsh reads packages' completions from vendor-completions and the
  # local administrator's from /usr/local/share/zsh/site-functions.
  if(prefix STREQUAL "/usr")
    set(zsh_dir "${YARD_DATADIR}/zsh/vendor-completions")
  else()
    set(zsh_dir "${YARD_DATADIR}/zsh/site-functions")
  endif()
endif()

set(gen "${YARD_BINARY_DIR}/install-generated")
configure_file("${YARD_SOURCE_DIR}/dist/systemd/yard.service.in" "${gen}/yard.service" @ONLY)
configure_file("${YARD_SOURCE_DIR}/dist/yard.yaml.in" "${gen}/yard.yaml" @ONLY)

file(INSTALL DESTINATION "${unit_dir}" TYPE FILE FILES "${gen}/yard.service")
file(INSTALL DESTINATION "${YARD_DATADIR}/yard" TYPE FILE FILES "${gen}/yard.yaml")
file(INSTALL DESTINATION "${zsh_dir}" TYPE FILE FILES "${YARD_SOURCE_DIR}/dist/completion/_yard")
